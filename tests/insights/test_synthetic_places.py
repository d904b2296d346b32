"""The synthetic city's regions, homes and trips agree with its presence."""

import csv
import datetime as dt
import json
from collections import defaultdict

import pytest
from django.contrib.gis.geos import GEOSGeometry

from insights.grid import cell_corner
from insights.services import home_load, presence_load, regions_load, trips_load
from insights.synthetic.city import DEMO_CITY, write_presence_csv
from insights.synthetic.city_places import DISTRICTS, write_home_csv, write_regions_geojson, write_trips_csv

START, DAYS = dt.date(2026, 3, 28), 2  # the spring DST change falls inside


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("city")
    presence = folder / "presence.csv"
    write_presence_csv(path=presence, start=START, days=DAYS, seed=7)
    write_regions_geojson(path=folder / "regions.geojson")
    write_home_csv(path=folder / "home.csv", presence_path=presence)
    write_trips_csv(path=folder / "trips.csv", presence_path=presence)
    return folder


def rows(path):
    with path.open() as lines:
        return list(csv.DictReader(lines))


def test_everyone_at_home_is_everyone_present(files):
    present = {
        (row["cell"], row["hour"]): int(row["visits"])
        for row in rows(files / "presence.csv")
        if row["age_band"] == row["gender"] == "*"
    }
    everyone, by_region = {}, defaultdict(int)
    for row in rows(files / "home.csv"):
        key = (row["cell"], row["hour"])
        if row["home_region"] == "*":
            everyone[key] = int(row["visitors"])
        else:
            by_region[key] += int(row["visitors"])

    assert everyone == present
    assert all(total <= everyone[key] for key, total in by_region.items())
    assert by_region  # homes are told


def test_trips_out_of_a_district_stay_under_its_people(files):
    district_of = {}
    cols, rows_per = 8, 10
    for row in rows(files / "presence.csv"):
        northing, easting = cell_corner(row["cell"])
        col, line = (easting - DEMO_CITY.origin_east) // 250, (northing - DEMO_CITY.origin_north) // 250
        district_of[row["cell"]] = DISTRICTS[(line // rows_per) * 3 + col // cols][0]
    people = defaultdict(int)
    for row in rows(files / "presence.csv"):
        if row["age_band"] == row["gender"] == "*":
            people[(district_of[row["cell"]], row["hour"])] += int(row["visits"])
    leaving = defaultdict(int)
    for row in rows(files / "trips.csv"):
        leaving[(row["origin"], row["hour"])] += int(row["trips"])

    assert leaving and all(trips <= people[key] for key, trips in leaving.items())


def test_the_districts_tile_the_city(files):
    features = json.loads((files / "regions.geojson").read_text())["features"]
    districts = [
        GEOSGeometry(json.dumps(f["geometry"]), srid=4326) for f in features if f["properties"]["code"].startswith("D")
    ]
    for district in districts:
        district.transform(3035)
    union = districts[0]
    for district in districts[1:]:
        union = union.union(district)

    grid_m2 = DEMO_CITY.cols * DEMO_CITY.rows * 250 * 250
    assert union.area == pytest.approx(grid_m2, rel=1e-6)  # 7-decimal degrees: centimetres
    assert sum(district.area for district in districts) - union.area < 1.0  # no overlaps


def test_the_files_load(files, db):
    presence_load(path=files / "presence.csv")
    regions_load(path=files / "regions.geojson")

    assert home_load(path=files / "home.csv").rows > 0
    assert trips_load(path=files / "trips.csv").cells == len(DISTRICTS)
