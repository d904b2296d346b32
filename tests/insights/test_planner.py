"""Rollups answer exactly what the hourly data answers; the planner picks the coarsest."""

import datetime as dt
from collections import defaultdict
from zoneinfo import ZoneInfo

import pytest
from django.contrib.gis.geos import MultiPolygon

from insights import scans as insights_scans
from insights import sums as insights_sums
from insights.models import DatasetVersion
from insights.reports import Query, footfall_result
from insights.selectors import current_release_policy
from insights.sums import presence_source, presence_totals
from tests import grid
from tests.conftest import CITY_CELLS, city_visits
from tests.insights.conftest import published

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
UTC = dt.UTC
# Four weeks around the spring DST change, Monday to Monday in Berlin.
START = dt.datetime(2026, 3, 16, tzinfo=BERLIN)
END = dt.datetime(2026, 4, 13, tzinfo=BERLIN)


@pytest.fixture
def month_of_data(db, tmp_path):
    loaded = grid.load_totals(
        tmp_path / "month.csv",
        cells=CITY_CELLS,
        start=START.astimezone(UTC),
        end=END.astimezone(UTC),
        visits=city_visits,
    )
    return loaded, DatasetVersion.objects.latest("pk").pk


def totals(granularity, version, *, source=None, start=START, end=END, time_zone="Europe/Berlin", polygon=None):
    """All-ages, all-genders released sums by bucket start."""
    sums = presence_totals(
        geometry=MultiPolygon(polygon or grid.square(0.5, 0, 2, 3), srid=4326),
        start=start,
        end=end,
        granularity=granularity,
        time_zone=time_zone,
        version=version,
        policy=current_release_policy().pk,
        source=source,
    )
    return {bucket: released for (bucket, _, _), released in sums.items()}


@pytest.mark.parametrize(
    "granularity, time_zone, source",
    [
        ("hour", "Europe/Berlin", "hour"),
        ("day", "Europe/Berlin", "day"),
        ("month", "Europe/Berlin", "day"),
        ("week", "Europe/Berlin", "day"),
        ("day", "America/New_York", "hour"),
        ("week", "Asia/Kolkata", "hour"),
    ],
)
def test_the_planner_reads_rollups_only_in_their_own_zone(granularity, time_zone, source):
    assert presence_source(granularity=granularity, time_zone=time_zone) == source


@pytest.mark.parametrize("granularity, rollup", [("day", "day"), ("week", "day"), ("month", "day")])
def test_a_rollup_gives_the_same_numbers_as_the_hours(month_of_data, granularity, rollup):
    _, version = month_of_data
    start, end = (
        (dt.datetime(2026, 3, 1, tzinfo=BERLIN), dt.datetime(2026, 5, 1, tzinfo=BERLIN))
        if granularity == "month"
        else (START, END)
    )

    from_hours = totals(granularity, version, source="hour", start=start, end=end)
    from_rollup = totals(granularity, version, source=rollup, start=start, end=end)

    assert from_hours.keys() == from_rollup.keys()
    assert len(from_hours) == {"day": 28, "week": 4, "month": 2}[granularity]
    for bucket, released in from_hours.items():
        assert from_rollup[bucket].value == pytest.approx(released.value, rel=1e-9)
        assert from_rollup[bucket].weight == pytest.approx(released.weight, rel=1e-9)
        assert from_rollup[bucket].count == released.count  # hourly values published


def test_another_zone_is_summed_from_the_hours_by_its_own_local_days(month_of_data):
    loaded, version = month_of_data
    start, end = dt.datetime(2026, 3, 17, tzinfo=NEW_YORK), dt.datetime(2026, 4, 10, tzinfo=NEW_YORK)
    expected = defaultdict(int)
    for (cell, hour), visits in loaded.items():
        if cell in {(0, 0), (1, 0), (0, 1), (1, 1)} and start <= hour < end:
            expected[hour.astimezone(NEW_YORK).date()] += visits

    report = footfall_result(
        Query(
            geometry=MultiPolygon(grid.square(0, 0, 2, 2), srid=4326),
            start=start,
            end=end,
            granularity="day",
            time_zone="America/New_York",
            version=version,
            policy=current_release_policy(),
        )
    )

    assert [row["person_hours"] for row in report["series"]] == [expected[day] for day in sorted(expected)]
    assert report["series"][0]["start"] == "2026-03-17T00:00:00-04:00"


def test_the_rollups_hold_the_sums_of_the_hours(month_of_data):
    loaded, _ = month_of_data  # every value 20 or more: all released
    days, weeks = defaultdict(lambda: (0, 0)), defaultdict(lambda: (0, 0))
    for (cell, hour), visits in loaded.items():
        day = hour.astimezone(BERLIN).date()
        for sums, key in ((days, day), (weeks, day - dt.timedelta(days=day.weekday()))):
            value, hours = sums[(grid.cell_id_of(cell), key, "*", "*")]
            sums[(grid.cell_id_of(cell), key, "*", "*")] = (value + visits, hours + 1)

    assert published("presence", period="day") == days
    assert published("presence", period="week") == weeks


def test_a_report_pinned_to_a_version_reads_only_its_part_of_a_shared_day(db, tmp_path):
    # Two batches split the local day of 20 March at 12:00 local time.
    noon = dt.datetime(2026, 3, 20, 12, tzinfo=BERLIN).astimezone(UTC)
    day_start, day_end = dt.datetime(2026, 3, 20, tzinfo=BERLIN), dt.datetime(2026, 3, 21, tzinfo=BERLIN)
    grid.load_totals(
        tmp_path / "a.csv", cells=[(0, 0)], start=day_start.astimezone(UTC), end=noon, visits=lambda c, h: 10
    )
    first = DatasetVersion.objects.latest("pk").pk
    grid.load_totals(
        tmp_path / "b.csv", cells=[(0, 0)], start=noon, end=day_end.astimezone(UTC), visits=lambda c, h: 20
    )
    second = DatasetVersion.objects.latest("pk").pk
    polygon = grid.square(0, 0, 1, 1)

    pinned = totals("day", first, start=day_start, end=day_end, polygon=polygon)
    latest = totals("day", second, start=day_start, end=day_end, polygon=polygon)

    # 0.3 mm reprojection drift: a share of 0.99999...
    assert {bucket: released.value for bucket, released in pinned.items()} == {
        day_start: pytest.approx(12 * 10, rel=1e-5)
    }
    assert {bucket: released.value for bucket, released in latest.items()} == {
        day_start: pytest.approx(12 * 10 + 12 * 20, rel=1e-5)
    }
    assert (pinned[day_start].count, latest[day_start].count) == (12, 24)
    # one day row per dataset version
    day_row = (grid.cell_id_of((0, 0)), day_start.date(), "*", "*")
    assert published("presence", version=first, period="day") == {day_row: (12 * 10, 12)}
    assert published("presence", version=second, period="day") == {day_row: (12 * 20, 12)}


def hourly_progress(version, *, start=START, end=END, granularity="hour") -> list[float]:
    fractions = []
    presence_totals(
        geometry=MultiPolygon(grid.square(0, 0, 2, 2), srid=4326),
        start=start,
        end=end,
        granularity=granularity,
        time_zone="Europe/Berlin",
        version=version,
        policy=current_release_policy().pk,
        on_progress=fractions.append,
    )
    return fractions


def test_a_large_hourly_read_reports_progress_after_each_statement_up_to_one(month_of_data, monkeypatch):
    _, version = month_of_data
    monkeypatch.setattr(insights_sums, "ROWS_AT_ONCE", 1)  # every read counts as large
    monkeypatch.setattr(insights_scans, "ROWS_PER_STATEMENT", 1)  # a statement a month

    # 16 March to 13 April: the packed UTC months of March and April, a statement each
    assert hourly_progress(version) == [0.5, 1.0]


def test_a_large_read_of_few_rows_is_one_statement(month_of_data, monkeypatch):
    _, version = month_of_data
    monkeypatch.setattr(insights_sums, "ROWS_AT_ONCE", 1)  # every read counts as large

    assert hourly_progress(version) == [1.0]


def test_a_large_read_of_the_day_rollup_reports_the_places_read_batch_by_batch(month_of_data, monkeypatch):
    _, version = month_of_data
    monkeypatch.setattr(insights_sums, "ROWS_AT_ONCE", 1)  # every read counts as large
    monkeypatch.setattr(insights_scans, "POSITIONS_PER_BATCH", 1)  # a packed row per batch

    # The area's 4 cells, each with a row of days in March and in April, in one statement.
    assert hourly_progress(version, granularity="day") == [0.25, 0.5, 0.75, 1.0]


def test_a_small_read_is_one_statement(month_of_data):
    _, version = month_of_data

    assert hourly_progress(version) == [1.0]


@pytest.mark.parametrize("granularity", ["hour", "day"])
@pytest.mark.parametrize(
    ("rows_per_statement", "positions_per_batch"),
    [
        (1, 1),  # a statement a month, a packed row per batch
        (10**6, 10**6),  # both months in one statement and one batch, split by month when summed
    ],
)
def test_a_large_read_gives_the_same_report_as_the_months_kept(
    month_of_data, monkeypatch, granularity, rows_per_statement, positions_per_batch
):
    _, version = month_of_data
    query = Query(
        geometry=MultiPolygon(grid.square(0, 0, 4, 4), srid=4326),
        start=START,
        end=END,
        granularity=granularity,
        time_zone="Europe/Berlin",
        version=version,
        policy=current_release_policy(),
    )
    at_once = footfall_result(query)

    monkeypatch.setattr(insights_sums, "ROWS_AT_ONCE", 1)  # every read counts as large: streamed
    monkeypatch.setattr(insights_scans, "ROWS_PER_STATEMENT", rows_per_statement)
    monkeypatch.setattr(insights_scans, "POSITIONS_PER_BATCH", positions_per_batch)
    streamed = footfall_result(query)

    assert streamed == at_once
    assert {cell["person_hours"] is not None for cell in at_once["cells"]} == {True}
