"""The benchmark's synthetic metro: deterministic, loadable, and with the rhythms of a city."""

import datetime as dt
from collections import defaultdict

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from insights.models import Presence
from insights.services import presence_load
from insights.synthetic.city import LOCAL_ZONE, UPSTREAM_MIN_COUNT
from insights.synthetic.metro import SIZES, SUDRING_CENTER, MetroFile, write_metro, write_metro_csv

# 2 km × 2 km around the Südring Center, Saturday 11 and Sunday 12 January 2025.
XS = SIZES["XS"]
SATURDAY, SUNDAY = dt.date(2025, 1, 11), dt.date(2025, 1, 12)


@pytest.fixture(scope="module")
def weekend(tmp_path_factory) -> MetroFile:
    return write_metro(path=tmp_path_factory.mktemp("metro") / "weekend.parquet", size=XS, seed=7)


def mall_visits(weekend: MetroFile) -> dict[tuple[dt.date, int], int]:
    """Visits in the cells within 250 m of the Südring Center's centre, per local day and hour."""
    east_km, north_km = XS.cell_centres_km()
    near = np.hypot(east_km - SUDRING_CENTER.east_km, north_km - SUDRING_CENTER.north_km) <= 0.25
    mall_codes = {code for code, is_near in zip(XS.cell_codes(), near, strict=True) if is_near}
    table = pq.read_table(weekend.path)
    visits = defaultdict(int)
    for code, hour, count in zip(*(table[name].to_pylist() for name in ("cell", "hour", "visits")), strict=True):
        if code in mall_codes:
            local = hour.astimezone(LOCAL_ZONE)
            visits[(local.date(), local.hour)] += count
    return visits


def test_a_seed_always_writes_the_same_file_and_another_seed_another(weekend, tmp_path):
    again = write_metro(path=tmp_path / "again.parquet", size=XS, seed=7)
    other = write_metro(path=tmp_path / "other.parquet", size=XS, seed=8)

    assert again.path.read_bytes() == weekend.path.read_bytes()
    assert other.path.read_bytes() != weekend.path.read_bytes()


def test_the_file_loads_through_presence_load(db, weekend):
    summary = presence_load(path=weekend.path)

    assert (summary.rows, summary.cells, summary.already_loaded) == (weekend.rows, XS.cells, False)
    assert (summary.period_start, summary.period_end) == (XS.start(), XS.end())
    assert Presence.objects.filter(age_band=0, gender=0).count() == weekend.rows


def test_the_csv_copy_holds_the_same_rows_and_loads_to_the_same_sums(db, weekend, tmp_path):
    csv_path = tmp_path / "weekend.csv"

    rows = write_metro_csv(parquet_path=weekend.path, csv_path=csv_path)
    summary = presence_load(path=csv_path)

    lines = csv_path.read_text().splitlines()
    assert lines[0] == "cell,hour,age_band,gender,visits"
    first = pq.read_table(weekend.path).slice(0, 1).to_pylist()[0]
    hour = first["hour"].astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert lines[1] == f"{first['cell']},{hour},*,*,{first['visits']}"
    assert rows == summary.rows == weekend.rows == len(lines) - 1
    total = sum(pq.read_table(weekend.path, columns=["visits"])["visits"].to_pylist())
    assert sum(Presence.objects.filter(age_band=0, gender=0).values_list("visits", flat=True)) == total


def test_counts_under_the_operators_minimum_are_absent(weekend):
    visits = pq.read_table(weekend.path, columns=["visits"])["visits"]

    assert pc.min(visits).as_py() >= UPSTREAM_MIN_COUNT
    assert weekend.rows < XS.cells * 48  # quiet cells lost night hours


def test_the_shopping_centre_is_quieter_at_night_than_in_the_afternoon(weekend):
    visits = mall_visits(weekend)

    assert visits[(SATURDAY, 3)] * 4 < visits[(SATURDAY, 15)]


def test_the_shopping_centre_is_quieter_on_sunday_than_on_saturday(weekend):
    visits = mall_visits(weekend)
    per_day = {day: sum(count for (date, _), count in visits.items() if date == day) for day in (SATURDAY, SUNDAY)}

    assert per_day[SUNDAY] * 2 < per_day[SATURDAY]
