"""Stage 2 on one hand-made day, so that each derivation can be read off: stays, presence,
arrivals and dwell bands, home region, trips; and what stage 1 and 2 leave out."""

import dataclasses
import datetime as dt

import pyarrow as pa
import pytest

from insights.synthetic.city import DEMO_CITY
from pipeline.city import Day
from pipeline.geography import cells_of
from pipeline.keys import DayKeys
from pipeline.stage2 import DWELL_BANDS, Transformed, age_band, stage2_transform
from pipeline.stage3 import stage3_aggregate

DAY = Day(dt.date(2026, 3, 30))  # a Monday of 24 hours, local midnight at 22:00 UTC
HOME = (DEMO_CITY.origin_east + 100, DEMO_CITY.origin_north + 100)  # column 0, row 0: district D1
PASSING = (DEMO_CITY.origin_east + 5 * 250 + 100, DEMO_CITY.origin_north + 250 + 100)  # D1
WORK = (DEMO_CITY.origin_east + 10 * 250 + 100, DEMO_CITY.origin_north + 2 * 250 + 100)  # D2


def track(*points: tuple[str, tuple[int, int]]) -> pa.Table:
    """Events of one pseudonym at local clock times (hh:mm) on DAY."""
    times = [DAY.start + dt.timedelta(hours=int(t[:2]), minutes=int(t[3:])) for t, _ in points]
    return pa.table(
        {
            "pseudonym": ["p1"] * len(points),
            "time": pa.array(times, pa.timestamp("s", tz="UTC")),
            "easting": pa.array([place[0] for _, place in points], pa.int32()),
            "northing": pa.array([place[1] for _, place in points], pa.int32()),
            "event": ["data"] * len(points),
        }
    )


ATTRIBUTES = pa.table(
    {
        "pseudonym": ["p1"],
        "birth_date": pa.array([dt.date(1990, 6, 15)], pa.date32()),
        "gender": ["f"],
        "tariff": ["postpaid"],
    }
)


@pytest.fixture
def commute() -> Transformed:
    events = track(
        ("02:00", HOME),
        ("07:30", PASSING),
        ("07:35", WORK),
        ("12:00", WORK),
        ("17:10", PASSING),
        ("17:14", HOME),
    )
    return stage2_transform(events=events, attributes=ATTRIBUTES, day=DAY)


def cell(point) -> int:
    return int(cells_of(eastings=[point[0]], northings=[point[1]])[0])


def test_presence_is_every_cell_hour_a_stay_overlaps_from_midnight_to_midnight(commute):
    hours = {}
    for _, place, hour in commute.presence.tolist():
        hours.setdefault(place, []).append(hour)

    assert hours == {
        cell(HOME): [0, 1, 2, 3, 4, 5, 6, 7, 17, 18, 19, 20, 21, 22, 23],  # from midnight: before the first event too
        cell(PASSING): [7, 17],
        cell(WORK): [7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17],
    }


def test_arrivals_fall_in_their_hour_and_their_dwell_band(commute):
    arrivals = sorted((hour, place, DWELL_BANDS[band]) for _, place, hour, band in commute.arrivals.tolist())

    assert arrivals == sorted(
        [
            (7, cell(PASSING), "<15m"),
            (7, cell(WORK), ">3h"),
            (17, cell(PASSING), "<15m"),
            (17, cell(HOME), ">3h"),  # cut at midnight: the next day is another pseudonym
        ]
    )


def test_home_is_the_night_s_region_and_trips_join_stops_not_passing_cells(commute):
    trips = [(commute.regions[o], commute.regions[d], hour) for _, o, d, hour in commute.trips.tolist()]

    assert commute.home_region.tolist() == ["D1"]
    assert trips == [("D1", "D2", 7), ("D2", "D1", 17)]


def test_stage_2_keeps_bands_not_birth_dates_and_nothing_of_the_tariff_or_event_type(commute):
    assert commute.age_band.tolist() == ["35-44"]
    assert commute.gender.tolist() == ["f"]
    assert [field.name for field in dataclasses.fields(Transformed)] == [
        "day",
        "age_band",
        "gender",
        "home_region",
        "presence",
        "arrivals",
        "trips",
        "regions",
    ]


def test_age_bands_change_on_the_birthday():
    assert age_band(birth_date=dt.date(2001, 3, 31), on=dt.date(2026, 3, 30)) == "18-24"
    assert age_band(birth_date=dt.date(2001, 3, 30), on=dt.date(2026, 3, 30)) == "25-34"
    assert age_band(birth_date=dt.date(1961, 1, 1), on=dt.date(2026, 3, 30)) == "65+"


def test_a_day_key_lives_in_a_private_file_until_it_is_destroyed(tmp_path):
    keys = DayKeys(tmp_path / "keys")

    key = keys.create(day=DAY.date)
    path = keys.path(day=DAY.date)
    mode = path.stat().st_mode & 0o777
    stored = path.read_bytes()
    with pytest.raises(FileExistsError):  # never a second key for a day while its first exists
        keys.create(day=DAY.date)
    keys.destroy(day=DAY.date)

    assert len(key) == 32 and stored == key
    assert mode == 0o600
    assert not path.exists()


def test_a_day_with_everyone_opted_out_gives_no_row():
    nobody = track(("02:00", HOME)).slice(0, 0)

    transformed = stage2_transform(events=nobody, attributes=ATTRIBUTES.slice(0, 0), day=DAY)
    counted = stage3_aggregate(transformed=transformed, min_subscribers=5)

    assert counted.lines == {"presence": [], "dwell": [], "home": [], "trips": []}
