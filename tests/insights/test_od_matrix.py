"""Origin-destination matrix: trips between zones, from the trips kind."""

import datetime as dt
from collections import defaultdict
from zoneinfo import ZoneInfo

import pytest

from insights.models import Trips, TripsWeek
from insights.reports import od_matrix_result
from insights.selectors import region_names, regions_in_area
from insights.services import LoadRejected, trips_load
from tests import grid
from tests.conftest import DWELL_END as END
from tests.conftest import DWELL_START as START

BERLIN = ZoneInfo("Europe/Berlin")


def od_matrix(version, *, granularity="day", zones=("E", "N", "W")):
    return od_matrix_result(
        start=START,
        end=END,
        granularity=granularity,
        time_zone="Europe/Berlin",
        version=version,
        zones=region_names(zones),
    )


def local_bucket(hour, granularity) -> str:
    local = hour.astimezone(BERLIN)
    return local.isoformat() if granularity == "hour" else local.date().isoformat()


@pytest.mark.parametrize("granularity", ["hour", "day"])
def test_each_flow_is_the_sum_of_its_hours(trips, granularity):
    rows, version = trips

    result = od_matrix(version, granularity=granularity)

    expected = defaultdict(int)
    for (origin, destination, hour), value in rows.items():
        expected[(local_bucket(hour, granularity), origin, destination)] += value
    key_length = 25 if granularity == "hour" else 10
    released = {
        (flow["start"][:key_length], flow["origin"], flow["destination"]): flow["trips"] for flow in result["flows"]
    }
    # N -> E is 2 trips an hour: under k in an hour, released per day.
    withheld = {key for key, value in expected.items() if value < 10}
    assert {key: value for key, value in released.items() if value is not None} == {
        key: value for key, value in expected.items() if key not in withheld
    }
    assert {key for key, value in released.items() if value is None} == withheld
    assert bool(withheld) == (granularity == "hour")


def test_the_matrix_holds_the_period_sums_and_withholds_absent_pairs(trips):
    rows, version = trips

    result = od_matrix(version)

    period = defaultdict(int)
    for (origin, destination, _), value in rows.items():
        period[(origin, destination)] += value
    codes = [zone["zone"] for zone in result["zones"]]
    assert codes == ["E", "N", "W"]
    for row, origin in enumerate(codes):
        for column, destination in enumerate(codes):
            assert result["matrix"][row][column] == period.get((origin, destination)), (origin, destination)
    assert result["matrix"][0][1] is None  # E -> N had no trips released upstream


def test_weekly_flows_come_from_the_week_rollup(trips):
    rows, version = trips
    assert TripsWeek.objects.filter(dataset_version_id=version).exists()

    monday = dt.datetime(2026, 3, 30, tzinfo=BERLIN)
    result = od_matrix_result(
        start=monday - dt.timedelta(weeks=1),
        end=monday,
        granularity="week",
        time_zone="Europe/Berlin",
        version=version,
        zones=region_names(["W"]),
    )

    # The week of 23 March holds 27-29 March of the loaded days.
    expected = sum(value for (o, d, hour), value in rows.items() if o == d == "W" and hour < monday)
    assert [flow["trips"] for flow in result["flows"]] == [expected]


def test_the_zones_an_area_overlaps(regions):
    assert [zone.code for zone in regions_in_area(geometry=grid.square(0, 0, 4, 4))] == ["E", "W"]
    # A drawing along W's edge does not pull in E.
    assert [zone.code for zone in regions_in_area(geometry=grid.square(0, 0, 2, 2))] == ["W"]


def test_trips_are_stored_by_zone(trips):
    rows, _ = trips
    assert Trips.objects.count() == len(rows)


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
