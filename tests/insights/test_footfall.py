"""The engine's numbers against sums computed here, independently, from the loaded rows."""

import datetime as dt
from collections import defaultdict
from zoneinfo import ZoneInfo

import pytest
from django.contrib.gis.geos import MultiPolygon

from insights.reports import Query, footfall_result
from insights.selectors import area_cells, current_release_policy
from insights.services import presence_load
from insights.sums import presence_totals
from tests import grid
from tests.conftest import CITY_END, CITY_START

BERLIN = ZoneInfo("Europe/Berlin")
UTC = dt.UTC


def area(polygon) -> MultiPolygon:
    return MultiPolygon(polygon, srid=4326)


def local_days(loaded: dict, weights: dict) -> dict[dt.date, float]:
    days = defaultdict(float)
    for (cell, hour), visits in loaded.items():
        if cell in weights:
            days[hour.astimezone(BERLIN).date()] += weights[cell] * visits
    return dict(days)


def result(polygon, start, end, granularity, version) -> dict:
    return footfall_result(
        Query(
            geometry=area(polygon),
            start=start,
            end=end,
            granularity=granularity,
            time_zone="Europe/Berlin",
            version=version,
            policy=current_release_policy(),
        )
    )


def version_of(loaded) -> int:
    from insights.models import DatasetVersion

    return DatasetVersion.objects.latest("pk").pk


def test_an_area_over_whole_cells_sums_their_counts_per_local_day_including_the_23_hour_day(city):
    covered = {(0, 0): 1.0, (1, 0): 1.0, (0, 1): 1.0, (1, 1): 1.0}
    expected = local_days(city, covered)

    report = result(grid.square(0, 0, 2, 2), CITY_START, CITY_END, "day", version_of(city))

    assert [row["start"] for row in report["series"]] == [
        "2026-03-27T00:00:00+01:00",
        "2026-03-28T00:00:00+01:00",
        "2026-03-29T00:00:00+01:00",
        "2026-03-30T00:00:00+02:00",
        "2026-03-31T00:00:00+02:00",
    ]
    assert [row["hours"] for row in report["series"]] == [24, 24, 23, 24, 24]
    assert [row["person_hours"] for row in report["series"]] == [round(expected[day]) for day in sorted(expected)]
    assert [row["visits"] for row in report["series"]] == [row["person_hours"] for row in report["series"]]
    assert [row["average_present"] for row in report["series"]] == [
        round(round(expected[day]) / hours, 1)
        for day, hours in zip(sorted(expected), [24, 24, 23, 24, 24], strict=True)
    ]
    assert not any(row["suppressed"] for row in report["series"])
    assert {row["released_share"] for row in report["series"]} == {1.0}
    assert report["metric"] == "person_hours"


def test_a_cell_half_inside_the_area_counts_half(city):
    weights = {(0, 0): 1.0, (0, 1): 1.0, (1, 0): 0.5, (1, 1): 0.5}
    polygon = area(grid.square(0, 0, 1.5, 2))

    totals = presence_totals(
        geometry=polygon,
        start=CITY_START,
        end=CITY_END,
        granularity="hour",
        time_zone="Europe/Berlin",
        version=version_of(city),
        policy=current_release_policy().pk,
    )

    assert len(totals) == len(grid.hours(CITY_START, CITY_END))
    for (hour, _, _), total in totals.items():
        expected = sum(weight * city[(cell, hour)] for cell, weight in weights.items())
        assert total.value == pytest.approx(expected, rel=1e-6)
        # every value published: all 4 cells' hours, weighed by their share inside the area
        assert (total.count, total.weight) == (4, pytest.approx(3.0, rel=1e-6))
    assert area_cells(geometry=polygon).cell_count == 4


def test_an_area_along_grid_lines_covers_exactly_its_cells(city):
    cells = area_cells(geometry=area(grid.square(1, 1, 2, 2)))

    assert cells.cell_count == 4
    assert cells.area_km2 == pytest.approx(0.25, rel=1e-6)
    assert cells.covered_km2 == pytest.approx(0.25, rel=1e-6)


def test_the_autumn_day_has_25_hours_and_all_their_counts(db, tmp_path):
    start, end = dt.datetime(2026, 10, 23, 22, tzinfo=UTC), dt.datetime(2026, 10, 26, 23, tzinfo=UTC)
    loaded = grid.load_totals(
        tmp_path / "autumn.csv", cells=[(0, 0)], start=start, end=end, visits=lambda cell, hour: 100 + hour.hour
    )

    report = result(grid.square(0, 0, 1, 1), start, end, "day", version_of(loaded))

    autumn_day = report["series"][1]
    assert (autumn_day["start"], autumn_day["end"], autumn_day["hours"]) == (
        "2026-10-25T00:00:00+02:00",
        "2026-10-26T00:00:00+01:00",
        25,
    )
    assert [row["person_hours"] for row in report["series"]] == [
        round(v) for _, v in sorted(local_days(loaded, {(0, 0): 1.0}).items())
    ]


def test_week_and_month_buckets_sum_every_hour_in_them(city):
    everything = {cell: 1.0 for cell in {cell for cell, _ in city}}
    total = sum(city.values())

    month = result(
        grid.square(0, 0, 4, 4),
        dt.datetime(2026, 3, 1, tzinfo=BERLIN),
        dt.datetime(2026, 4, 1, tzinfo=BERLIN),
        "month",
        version_of(city),
    )

    assert [(row["start"], row["person_hours"]) for row in month["series"]] == [("2026-03-01T00:00:00+01:00", total)]
    week = result(
        grid.square(0, 0, 4, 4),
        dt.datetime(2026, 3, 23, tzinfo=BERLIN),
        dt.datetime(2026, 4, 6, tzinfo=BERLIN),
        "week",
        version_of(city),
    )
    by_week = defaultdict(int)
    for day, visits in local_days(city, everything).items():
        by_week[day - dt.timedelta(days=day.weekday())] += visits
    assert [row["person_hours"] for row in week["series"]] == [
        by_week[dt.date(2026, 3, 23)],
        by_week[dt.date(2026, 3, 30)],
    ]


def test_values_under_k_are_released_as_null_and_flagged(db, tmp_path, settings):
    settings.PRIVACY_K = 10  # set before loading: the release is built with the load
    start = dt.datetime(2026, 3, 1, 23, tzinfo=UTC)
    rows = [(grid.code(0, 0), start + dt.timedelta(hours=h), "*", "*", 9) for h in range(24)]
    rows.append((grid.code(0, 0), start + dt.timedelta(hours=24), "*", "*", 10))
    grid.write_presence(tmp_path / "small.csv", rows)
    version = presence_load(path=tmp_path / "small.csv").version

    report = result(grid.square(0, 0, 1, 1), start, start + dt.timedelta(hours=26), "hour", version)

    # 24 hours of 9 withheld, one of 10 released, the last hour has no data at all
    assert [row["person_hours"] for row in report["series"]] == [None] * 24 + [10, None]
    assert [row["suppressed"] for row in report["series"]] == [True] * 24 + [False, True]
    assert [row["suppressed_reason"] for row in report["series"]] == ["not_released"] * 24 + [None, "not_released"]
    assert [row["released_share"] for row in report["series"]] == [0.0] * 24 + [1.0, 0.0]
    assert report["privacy"] == {
        "release_policy": current_release_policy().pk,
        "k": 10,
        "round_to": 1,
        "noise": False,
        "cell_hours": 26,
        "cell_hours_released": 1,
        "released_share": round(1 / 26, 4),
        "breakdown_values": 0,
        "breakdown_values_released": 0,
        "suppressed_values": 25,  # the 25 empty hours; the cell's own sum (10) is released
    }
    [cell] = report["cells"]
    assert cell == {"cell": grid.code(0, 0), "share": pytest.approx(1.0, abs=1e-5), "person_hours": 10, "visits": 10}


def test_a_report_reads_only_the_dataset_versions_up_to_its_own(db, tmp_path):
    start = dt.datetime(2026, 3, 1, 23, tzinfo=UTC)
    first = grid.load_totals(
        tmp_path / "a.csv", cells=[(0, 0)], start=start, end=start + dt.timedelta(hours=24), visits=lambda c, h: 50
    )
    grid.load_totals(
        tmp_path / "b.csv",
        cells=[(0, 0)],
        start=start + dt.timedelta(hours=24),
        end=start + dt.timedelta(hours=48),
        visits=lambda c, h: 70,
    )
    first_version = version_of(first) - 1

    report = result(grid.square(0, 0, 1, 1), start, start + dt.timedelta(hours=48), "day", first_version)

    assert [row["person_hours"] for row in report["series"]] == [1200, None]
    assert [source["dataset_version"] for source in report["sources"]] == [first_version]


def test_the_privacy_counts_are_of_elapsed_hours_in_whatever_zone_the_period_is_given(city):
    # 27 to 31 March in Berlin: 95 hours (29 March has 23), 4 cells, all released
    start, end = dt.datetime(2026, 3, 27, tzinfo=BERLIN), dt.datetime(2026, 3, 31, tzinfo=BERLIN)

    in_utc = result(grid.square(0, 0, 2, 2), start.astimezone(UTC), end.astimezone(UTC), "day", version_of(city))
    in_berlin = result(grid.square(0, 0, 2, 2), start, end, "day", version_of(city))

    assert in_utc["privacy"]["cell_hours"] == in_utc["privacy"]["cell_hours_released"] == 4 * 95
    assert in_berlin["privacy"] == in_utc["privacy"]
