"""The metro's districts, homes and trips agree with its presence, load, and are deterministic."""

import json
from collections import defaultdict

import pyarrow.parquet as pq
import pytest
from django.contrib.gis.geos import GEOSGeometry

from insights.kinds import HOME, TRIPS
from insights.metro import METRO_HEIGHT_KM, METRO_WIDTH_KM, SIZES, write_metro
from insights.metro_places import DISTRICTS, district_of, write_metro_places
from insights.services import aggregates_load, presence_load, regions_load
from insights.synthetic import UPSTREAM_MIN_COUNT

XS = SIZES["XS"]


def write(folder, seed=7):
    presence = write_metro(path=folder / "presence.parquet", size=XS, seed=seed).path
    paths = {
        name: folder / f"{name}.{'geojson' if name == 'regions' else 'parquet'}"
        for name in ("regions", "home", "trips")
    }
    written = write_metro_places(presence_path=presence, size=XS, **{f"{name}_path": p for name, p in paths.items()})
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


def test_the_files_load_through_the_loaders(db, files):
    presence, paths, written = files
    regions_load(path=paths["regions"])
    presence_load(path=presence)

    home = aggregates_load(kind=HOME, path=paths["home"])
    trips = aggregates_load(kind=TRIPS, path=paths["trips"])

    assert (home.rows, trips.rows) == (written.home_rows, written.trip_rows)
