"""Footfall broken down by age band and/or gender, proven against sums of the loaded rows."""

import datetime as dt
import itertools
from collections import defaultdict
from zoneinfo import ZoneInfo

import pytest
from django.contrib.gis.geos import MultiPolygon

from insights.reports import Query, footfall_result
from insights.segments import AGE_BANDS, GENDERS
from insights.selectors import current_release_policy
from insights.services import presence_load
from tests import grid
from tests.insights.report_queries import query

BERLIN = ZoneInfo("Europe/Berlin")
UTC = dt.UTC
START = dt.datetime(2026, 3, 27, tzinfo=BERLIN)
END = dt.datetime(2026, 3, 31, tzinfo=BERLIN)
CELLS = [(0, 0), (1, 0), (0, 1), (1, 1)]


def visits(cell, hour, age_band, gender) -> int:
    col, row = cell
    return 11 + 3 * AGE_BANDS.index(age_band) + 5 * GENDERS.index(gender) + col + 2 * row + hour.hour % 5


@pytest.fixture
def segmented(db, tmp_path):
    """Every segment, crossed ones too, for four cells over four local days."""
    segments = list(itertools.product(AGE_BANDS, GENDERS))
    rows = {
        (cell, hour, age, gender): visits(cell, hour, age, gender)
        for cell in CELLS
        for hour in grid.hours(START.astimezone(UTC), END.astimezone(UTC))
        for age, gender in segments
    }
    grid.write_presence(tmp_path / "segments.csv", ((grid.code(*c), h, a, g, v) for (c, h, a, g), v in rows.items()))
    presence_load(path=tmp_path / "segments.csv")
    return rows


def report(breakdowns, granularity="day"):
    return footfall_result(
        query(
            MultiPolygon(grid.square(0, 0, 2, 2), srid=4326),
            start=START,
            end=END,
            granularity=granularity,
            breakdowns=breakdowns,
        )
    )


def expected(rows, ages, genders) -> dict[tuple[str, str, str], int]:
    """Sums per (local day, age band, gender) over the rows of exactly these segments."""
    sums = defaultdict(int)
    for (_, hour, age, gender), value in rows.items():
        if age in ages and gender in genders:
            sums[(hour.astimezone(BERLIN).date().isoformat(), age, gender)] += value
    return sums


def released(result) -> dict[tuple[str, str, str], int]:
    return {(row["start"][:10], row["age_band"], row["gender"]): row["person_hours"] for row in result["segments"]}


@pytest.mark.parametrize("granularity", ["day", "hour"])
def test_by_age_band_each_band_sums_its_own_rows(segmented, granularity):
    result = report(["age_band"], granularity)

    by_day = defaultdict(int)  # hour rows added up per local day, to compare with the day rows
    for row in result["segments"]:
        by_day[(row["start"][:10], row["age_band"], row["gender"])] += row["person_hours"]
    assert dict(by_day) == expected(segmented, AGE_BANDS[1:], ["*"])
    assert len(result["segments"]) == len(result["series"]) * 6
    assert {row["gender"] for row in result["segments"]} == {"*"}
    # every value is at least k and every part of each cell-hour's tables is there: all released
    hours = 4 * len(grid.hours(START.astimezone(UTC), END.astimezone(UTC)))
    assert result["privacy"]["breakdown_values_released"] == hours * 6
    assert not any(row["suppressed"] for row in result["segments"])


def test_by_gender_each_gender_sums_its_own_rows(segmented):
    result = report(["gender"])

    assert released(result) == expected(segmented, ["*"], GENDERS[1:])


def test_by_both_each_crossed_segment_sums_its_own_rows(segmented):
    result = report(["age_band", "gender"])

    assert released(result) == expected(segmented, AGE_BANDS[1:], GENDERS[1:])
    assert len(result["segments"]) == 4 * 6 * 2
    assert result["breakdowns"] == ["age_band", "gender"]


def test_a_segment_the_data_lacks_is_withheld(db, tmp_path):
    start = START.astimezone(UTC)
    rows = [(grid.code(0, 0), start + dt.timedelta(hours=h), "*", "*", 40) for h in range(24)]
    rows += [(grid.code(0, 0), start + dt.timedelta(hours=h), "25-34", "*", 20) for h in range(24)]
    grid.write_presence(tmp_path / "sparse.csv", rows)
    version = presence_load(path=tmp_path / "sparse.csv").version

    result = footfall_result(
        Query(
            geometry=MultiPolygon(grid.square(0, 0, 1, 1), srid=4326),
            start=START,
            end=START + dt.timedelta(days=1),
            granularity="day",
            time_zone="Europe/Berlin",
            version=version,
            policy=current_release_policy(),
            breakdowns=["age_band"],
        )
    )

    # 40 - 20 leaves 20 (>= k) over the 5 bands the data lacks: 25-34 is released
    by_band = {row["age_band"]: (row["person_hours"], row["suppressed"]) for row in result["segments"]}
    assert by_band == {"25-34": (480, False)} | {band: (None, True) for band in AGE_BANDS[1:] if band != "25-34"}
    assert result["privacy"]["suppressed_values"] == 5
    assert (result["privacy"]["breakdown_values"], result["privacy"]["breakdown_values_released"]) == (24 * 6, 24)
