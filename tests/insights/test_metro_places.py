"""The metro's districts, homes, trips and dwell agree with its presence, load, and are deterministic."""

import json
from collections import defaultdict
from zoneinfo import ZoneInfo

import pyarrow.parquet as pq
import pytest
from django.contrib.gis.geos import GEOSGeometry

from insights.kinds import DWELL, DWELL_BANDS, HOME, TRIPS
from insights.services import aggregates_load, presence_load, regions_load
from insights.synthetic.city import UPSTREAM_MIN_COUNT
from insights.synthetic.metro import METRO_HEIGHT_KM, METRO_WIDTH_KM, SIZES, write_metro
from insights.synthetic.metro_places import DISTRICTS, VISITOR_ARRIVING, district_of, write_metro_places

XS = SIZES["XS"]


def write(folder, seed=7):
    presence = write_metro(path=folder / "presence.parquet", size=XS, seed=seed).path
    paths = {
        name: folder / f"{name}.{'geojson' if name == 'regions' else 'parquet'}"
        for name in ("regions", "home", "trips", "dwell")
    }
    written = write_metro_places(
        presence_path=presence, size=XS, seed=seed, **{f"{name}_path": p for name, p in paths.items()}
    )
    return presence, paths, written


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write(tmp_path_factory.mktemp("metro"))


def rows(path):
    return pq.read_table(path).to_pylist()


def test_everyone_at_home_is_everyone_present_and_the_released_homes_add_up_to_less(files):
    presence, paths, written = files
    present = {(row["cell"], row["hour"]): row["visits"] for row in rows(presence)}
    everyone, by_region = {}, defaultdict(int)
    for row in rows(paths["home"]):
        key = (row["cell"], row["hour"])
        if row["home_region"] == "*":
            everyone[key] = row["visitors"]
        else:
            assert row["visitors"] >= UPSTREAM_MIN_COUNT
            by_region[key] += row["visitors"]

    assert everyone == present
    assert by_region and all(total <= everyone[key] for key, total in by_region.items())
    assert written.home_rows == len(everyone) + sum(1 for row in rows(paths["home"]) if row["home_region"] != "*")


def test_trips_out_of_a_district_stay_under_its_people(files):
    presence, paths, _ = files
    east, north = XS.cell_centres_km()
    district = dict(zip(XS.cell_codes(), (f"B{number + 1:02d}" for number in district_of(east, north)), strict=True))
    people = defaultdict(int)
    for row in rows(presence):
        people[(district[row["cell"]], row["hour"])] += row["visits"]
    leaving = defaultdict(int)
    for row in rows(paths["trips"]):
        assert row["trips"] >= UPSTREAM_MIN_COUNT
        leaving[(row["origin"], row["hour"])] += row["trips"]

    assert leaving and all(trips <= people[key] for key, trips in leaving.items())


def test_dwell_bands_add_up_to_everyone_and_visitors_come_from_the_people_present(files):
    presence, paths, written = files
    present = {(row["cell"], row["hour"]): row["visits"] for row in rows(presence)}
    everyone, bands = {}, defaultdict(dict)
    for row in rows(paths["dwell"]):
        assert row["visitors"] >= UPSTREAM_MIN_COUNT
        key = (row["cell"], row["hour"])
        if row["dwell_band"] == "*":
            everyone[key] = row["visitors"]
        else:
            bands[key][row["dwell_band"]] = row["visitors"]
    all_bands = {key: found for key, found in bands.items() if len(found) == len(DWELL_BANDS) - 1}

    assert written.dwell_rows == len(everyone) + sum(len(found) for found in bands.values())
    assert set(bands) <= set(everyone) <= set(present)
    # Where the operator released every band, they add up to everyone; elsewhere to less.
    assert all_bands and all(sum(all_bands[key].values()) == everyone[key] for key in all_bands)
    assert all(sum(found.values()) <= everyone[key] for key, found in bands.items())
    # Visitors are a part of the people present: at most all of them arriving at the highest rate.
    assert all(visitors <= present[key] * max(VISITOR_ARRIVING.values()) for key, visitors in everyone.items())


def test_people_at_home_are_not_visitors(files):
    """At 3 in the morning nearly everyone is at home: a cell's visitors are a small part of its people."""
    presence, paths, _ = files
    night = {key: visits for key, visits in _by_key(rows(presence), "visits").items() if _local_hour(key[1]) == 3}
    visitors = _by_key([row for row in rows(paths["dwell"]) if row["dwell_band"] == "*"], "visitors")

    assert night
    # Were people at home to arrive as the demo city's do (4 in 100 an hour), it would be more.
    assert sum(visitors.get(key, 0) for key in night) < 0.03 * sum(night.values())


def _by_key(found, value):
    return {(row["cell"], row["hour"]): row[value] for row in found}


def _local_hour(moment):
    return moment.astimezone(ZoneInfo("Europe/Berlin")).hour


def test_the_districts_tile_the_whole_metro(files):
    _, paths, written = files
    features = json.loads(paths["regions"].read_text())["features"]
    shapes = [GEOSGeometry(json.dumps(feature["geometry"]), srid=4326) for feature in features]
    for shape in shapes:
        shape.transform(3035)
    union = shapes[0]
    for shape in shapes[1:]:
        union = union.union(shape)

    assert written.regions == len(features) == DISTRICTS
    assert union.area / 1e6 == pytest.approx(METRO_WIDTH_KM * METRO_HEIGHT_KM, rel=1e-6)
    assert sum(shape.area for shape in shapes) / 1e6 == pytest.approx(union.area / 1e6, rel=1e-6)  # no overlaps


def test_a_seed_always_writes_the_same_places(files, tmp_path):
    _, paths, _ = files
    _, again, _ = write(tmp_path)

    assert pq.read_table(again["home"]).equals(pq.read_table(paths["home"]))
    assert pq.read_table(again["trips"]).equals(pq.read_table(paths["trips"]))
    assert pq.read_table(again["dwell"]).equals(pq.read_table(paths["dwell"]))


def test_the_files_load_through_the_loaders(db, files):
    presence, paths, written = files
    regions_load(path=paths["regions"])
    presence_load(path=presence)

    home = aggregates_load(kind=HOME, path=paths["home"])
    trips = aggregates_load(kind=TRIPS, path=paths["trips"])
    dwell = aggregates_load(kind=DWELL, path=paths["dwell"])

    assert (home.rows, trips.rows, dwell.rows) == (written.home_rows, written.trip_rows, written.dwell_rows)
