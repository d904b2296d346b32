"""Dwell: visitors by how long they stayed, loaded, rolled up and summed like presence."""

import datetime as dt
from collections import defaultdict
from zoneinfo import ZoneInfo

import pytest
from django.contrib.gis.geos import MultiPolygon

from insights.kinds import DWELL_BANDS
from insights.models import Dwell
from insights.releases import releases_build
from insights.renderers import series_figure
from insights.reports import Query, dwell_result
from insights.selectors import current_release_policy
from insights.services import LoadRejected, dwell_load
from tests import grid
from tests.conftest import DWELL_END as END
from tests.conftest import DWELL_START as START
from tests.insights.conftest import as_stored, published

BERLIN = ZoneInfo("Europe/Berlin")
UTC = dt.UTC
HEADER = "cell,hour,dwell_band,visitors"


def by_local_day(rows, band) -> dict[str, int]:
    days = defaultdict(int)
    for (_, hour, row_band), value in rows.items():
        if row_band == band:
            days[hour.astimezone(BERLIN).date().isoformat()] += value
    return days


@pytest.mark.parametrize("granularity", ["day", "hour"])
def test_visitors_per_dwell_band_are_the_sums_of_their_rows(dwell, granularity):
    rows, version = dwell

    result = dwell_result(
        Query(
            geometry=MultiPolygon(grid.square(0, 0, 2, 2), srid=4326),
            start=START,
            end=END,
            granularity=granularity,
            time_zone="Europe/Berlin",
            version=version,
            policy=current_release_policy(),
        )
    )

    # Every value is 12 or more, and every band is there: the release publishes them all.
    assert result["metric"] == "visits"
    for band in DWELL_BANDS[1:]:
        released = defaultdict(int)
        for row in result["segments"]:
            if row["dwell_band"] == band:
                released[row["start"][:10]] += row["visits"]
                assert row["visitors"] == row["visits"]  # the deprecated name
        assert dict(released) == by_local_day(rows, band)
    totals = defaultdict(int)
    for row in result["series"]:
        totals[row["start"][:10]] += row["visits"]
    assert dict(totals) == by_local_day(rows, "*")
    assert {row["dwell_band"] for row in result["series"]} == {"*"}


def test_dwell_is_partitioned_and_its_release_rolled_up(dwell):
    rows, version = dwell

    assert Dwell.objects.count() == len(rows)
    assert published("dwell", version=version) == as_stored("dwell", rows)  # every value released
    days = published("dwell", version=version, period="day")
    assert sum(value for value, _ in days.values()) == sum(rows.values())
    assert sum(hours for _, hours in days.values()) == len(rows)


def test_a_bad_dwell_band_is_named(db, tmp_path):
    path = tmp_path / "dwell.csv"
    path.write_text(f"{HEADER}\n{grid.code(0, 0)},2026-03-29T00:00:00Z,2-4h,9\n")

    with pytest.raises(LoadRejected) as rejected:
        dwell_load(path=path)

    assert rejected.value.errors == ["line 2: dwell_band must be one of * <15m 15-60m 1-3h >3h, got '2-4h'"]
    assert not Dwell.objects.exists()


def test_a_presence_file_is_not_a_dwell_file(db, tmp_path):
    path = tmp_path / "presence.csv"
    path.write_text(f"cell,hour,age_band,gender,visits\n{grid.code(0, 0)},2026-03-29T00:00:00Z,*,*,9\n")

    with pytest.raises(LoadRejected, match="header must be exactly 'cell,hour,dwell_band,visitors'"):
        dwell_load(path=path)


def test_the_chart_draws_everyone_and_a_line_per_dwell_band_with_gaps_where_withheld(dwell, settings):
    # A cell-hour holds 26 + col + row + hour % 3 visitors who stay 15-60 minutes: released
    # under k = 30 (a new policy, its release built) in no cell at hours 0 and 1 mod 3 (26 to
    # 29), in the (1, 1) cell at hours 2 mod 3 (30).
    settings.PRIVACY_K = 30
    releases_build()
    result = dwell_result(
        Query(
            geometry=MultiPolygon(grid.square(0, 0, 2, 2), srid=4326),
            start=START,
            end=END,
            granularity="hour",
            time_zone="Europe/Berlin",
            version=dwell[1],
            policy=current_release_policy(),
        )
    )

    axes = series_figure(result).axes[0]

    # A gap (NaN, not equal to itself) where the value is withheld.
    drawn = {line.get_label(): [v if v == v else None for v in line.get_ydata()] for line in axes.get_lines()}
    assert list(drawn) == ["visits", *DWELL_BANDS[1:]]
    assert drawn["visits"] == [row["visits"] for row in result["series"]]
    for band in DWELL_BANDS[1:]:
        assert drawn[band] == [row["visits"] for row in result["segments"] if row["dwell_band"] == band]
    middle = drawn["15-60m"]
    assert None in middle and any(value is not None for value in middle)
    hours = [dt.datetime.fromisoformat(row["start"]).astimezone(UTC).hour for row in result["series"]]
    assert [value is None for value in middle] == [hour % 3 < 2 for hour in hours]
