"""Origin-destination matrix: trips between zones, from the trips kind."""

import datetime as dt
from collections import defaultdict
from zoneinfo import ZoneInfo

import pytest

from insights.models import Trips
from insights.reports import Query, od_matrix_result
from insights.selectors import current_release_policy, region_names, regions_in_area
from insights.services import LoadRejected, trips_load
from tests import grid
from tests.conftest import DWELL_END as END
from tests.conftest import DWELL_START as START
from tests.insights.conftest import published

K = 10

BERLIN = ZoneInfo("Europe/Berlin")


def od_matrix(version, *, granularity="day", zones=("E", "N", "W")):
    return od_matrix_result(
        Query(
            start=START,
            end=END,
            granularity=granularity,
            time_zone="Europe/Berlin",
            version=version,
            policy=current_release_policy(),
            regions=region_names(zones),
        )
    )


def released(rows) -> dict:
    """Trips are released per origin, destination and hour when at least k: no margins."""
    return {key: value for key, value in rows.items() if value >= K}


def local_bucket(hour, granularity) -> str:
    local = hour.astimezone(BERLIN)
    return local.isoformat() if granularity == "hour" else local.date().isoformat()


@pytest.mark.parametrize("granularity", ["hour", "day"])
def test_each_flow_is_the_sum_of_its_hours(trips, granularity):
    rows, version = trips

    result = od_matrix(version, granularity=granularity)

    expected = defaultdict(int)
    for (origin, destination, hour), value in released(rows).items():
        expected[(local_bucket(hour, granularity), origin, destination)] += value
    key_length = 25 if granularity == "hour" else 10
    flows = {
        (flow["start"][:key_length], flow["origin"], flow["destination"]): flow["trips"] for flow in result["flows"]
    }
    # N -> E is 2 trips an hour: withheld in every hour, so in no day either; only released
    # flows are listed.
    assert flows == dict(expected)
    assert not any((origin, destination) == ("N", "E") for _, origin, destination in flows)
    assert {flow["released_share"] for flow in result["flows"]} == {1.0}
    hours = len(grid.hours(START.astimezone(dt.UTC), END.astimezone(dt.UTC)))
    assert result["privacy"]["zone_pair_hours_released"] == len(released(rows)) == 7 * hours


def test_the_matrix_holds_the_period_sums_and_withholds_absent_pairs(trips):
    rows, version = trips

    result = od_matrix(version)

    period = defaultdict(int)
    for (origin, destination, _), value in released(rows).items():
        period[(origin, destination)] += value
    codes = [zone["zone"] for zone in result["zones"]]
    assert codes == ["E", "N", "W"]
    for row, origin in enumerate(codes):
        for column, destination in enumerate(codes):
            assert result["matrix"][row][column] == period.get((origin, destination)), (origin, destination)
    assert result["matrix"][0][1] is None  # E -> N had no trips released upstream
    assert result["matrix"][1][0] is None  # N -> E is under k in every hour
    assert result["privacy"]["suppressed_values"] == 2


def test_weekly_flows_come_from_the_week_rollup(trips):
    rows, version = trips
    weeks = published("trips", version=version, period="week")
    assert {week for _, week, _ in weeks} == {dt.date(2026, 3, 23), dt.date(2026, 3, 30)}

    monday = dt.datetime(2026, 3, 30, tzinfo=BERLIN)
    result = od_matrix_result(
        Query(
            start=monday - dt.timedelta(weeks=1),
            end=monday,
            granularity="week",
            time_zone="Europe/Berlin",
            version=version,
            policy=current_release_policy(),
            regions=region_names(["W"]),
        )
    )

    # The week of 23 March holds 27-29 March of the loaded days.
    expected = sum(value for (o, d, hour), value in rows.items() if o == d == "W" and hour < monday)
    assert [flow["trips"] for flow in result["flows"]] == [expected]
    [w_id] = region_names(["W"])
    hours = sum(1 for (o, d, hour) in rows if o == d == "W" and hour < monday)
    assert weeks[(w_id, dt.date(2026, 3, 23), "W")] == (expected, hours)


def test_the_zones_an_area_overlaps(regions):
    assert [zone.code for zone in regions_in_area(geometry=grid.square(0, 0, 4, 4))] == ["E", "W"]
    # A drawing along W's edge does not pull in E.
    assert [zone.code for zone in regions_in_area(geometry=grid.square(0, 0, 2, 2))] == ["W"]


def test_trips_are_stored_by_zone_and_released_per_pair_and_hour(trips):
    rows, version = trips
    assert Trips.objects.count() == len(rows)
    ids = {code: number for number, (code, _) in region_names(["W", "E", "N"]).items()}
    assert published("trips", version=version) == {
        (ids[origin], hour, destination): value for (origin, destination, hour), value in released(rows).items()
    }


def test_a_trip_needs_known_zones_on_both_ends(regions, tmp_path):
    path = tmp_path / "trips.csv"
    path.write_text(
        "origin,destination,hour,trips\n"
        "W,E,2026-03-29T00:00:00Z,9\n"
        "SOUTH,E,2026-03-29T00:00:00Z,9\n"
        "W,*,2026-03-29T00:00:00Z,9\n"
    )

    with pytest.raises(LoadRejected) as rejected:
        trips_load(path=path)

    assert rejected.value.errors == [
        "line 3: origin must be the code of a loaded region (load_regions), got 'SOUTH'",
        "line 4: destination must be the code of a loaded region (load_regions), got '*'",
    ]
    assert not Trips.objects.exists()


def test_the_zone_pair_hours_are_elapsed_hours_in_whatever_zone_the_period_is_given(trips):
    rows, version = trips  # START to END in Berlin: 95 hours, with the DST change

    result = od_matrix(version)

    assert result["privacy"]["zone_pair_hours"] == 9 * 95
    assert result["privacy"]["zone_pair_hours_released"] == len(released(rows)) == 7 * 95
    assert result["privacy"]["released_share"] == round(7 / 9, 4)
