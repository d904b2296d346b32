"""The synthetic city's regions, and where its people live and travel, derived from its
presence file so that the kinds agree: a cell-hour's home "*" row is its presence "*,*" row,
its home regions split that total, and the trips out of a district in an hour are a share of
the people present there. Deterministic: nothing here is random.
"""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from django.contrib.gis.geos import Polygon

from insights.grid import cell_corner
from insights.kinds import HOME, TRIPS
from insights.synthetic.city import CELL_M, DEMO_CITY, UPSTREAM_MIN_COUNT, City

GEOJSON_DECIMALS = 7
# Districts split the city grid 3 x 2: (code, name, first column, first row), 8 x 10 cells each.
DISTRICT_CELLS = (8, 10)
DISTRICTS = (
    ("D1", "Westend", 0, 0),
    ("D2", "Altstadt", 8, 0),
    ("D3", "Ostpark", 16, 0),
    ("D4", "Nordviertel", 0, 10),
    ("D5", "Hafen", 8, 10),
    ("D6", "Kanalviertel", 16, 10),
)
# Towns around the city, 3 km x 3 km, where commuters and shoppers live: (code, name, east, north
# of their lower-left corner in km from the city's).
MUNICIPALITIES = (
    ("M1", "Lindenau", -4.0, 1.0),
    ("M2", "Schkeuditz", -3.5, 6.0),
    ("M3", "Taucha", 7.0, 4.5),
    ("M4", "Markkleeberg", 2.0, -4.0),
    ("M5", "Borsdorf", 7.5, -1.0),
    ("M6", "Zwenkau", -3.0, -3.5),
)
TOWN_KM = 3.0
# Of the people in a cell, the share who live in its own district, by night and by day; the
# share whose home the operator could not tell; the rest by distance.
OWN_DISTRICT_SHARE = {"night": 0.6, "day": 0.3}
UNKNOWN_HOME_SHARE = 0.05
HOME_REGIONS_RELEASED = 3
TOWN_WEIGHT = 0.6  # a town draws fewer visitors than a district at the same distance
NIGHT_HOURS = frozenset((*range(0, 7), 22, 23))
# Of the people in a district, the share who start a trip in an hour: more at the commutes.
TRIP_RATE = np.array([0.01] * 6 + [0.06, 0.12, 0.10, 0.05] + [0.05] * 6 + [0.10, 0.12, 0.08] + [0.04] * 5)
STAY_WEIGHT = 2.0  # trips inside the district, against the gravity of the others


def write_regions_geojson(*, path: Path, city: City = DEMO_CITY) -> int:
    """The districts (tiling the city grid) and the towns around it; returns how many."""
    cols, rows = DISTRICT_CELLS
    features = [
        region_feature(
            code,
            name,
            (city.origin_east + col * CELL_M, city.origin_north + row * CELL_M, cols * CELL_M, rows * CELL_M),
        )
        for code, name, col, row in DISTRICTS
    ]
    features += [
        region_feature(
            code,
            name,
            (city.origin_east + east * 1000, city.origin_north + north * 1000, TOWN_KM * 1000, TOWN_KM * 1000),
        )
        for code, name, east, north in MUNICIPALITIES
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return len(features)


def write_home_csv(*, path: Path, presence_path: Path, city: City = DEMO_CITY) -> int:
    """home rows for every presence "*,*" row of the file; returns the row count."""
    present = _everyone(presence_path)
    east_km, north_km = _cell_centres_km(present["cell"], city)
    own = _district_of(east_km, north_km)
    codes, centres, weights = _regions(city)
    distance = np.hypot(east_km[:, None] - centres[:, 0], north_km[:, None] - centres[:, 1])
    pull = weights / (1.0 + distance)
    pull[np.arange(len(own)), own] = 0.0
    pull /= pull.sum(axis=1, keepdims=True)
    night = np.isin(present["local_hour"], list(NIGHT_HOURS))
    own_share = np.where(night, OWN_DISTRICT_SHARE["night"], OWN_DISTRICT_SHARE["day"])
    shares = pull * (1.0 - own_share - UNKNOWN_HOME_SHARE)[:, None]
    shares[np.arange(len(own)), own] = own_share
    visitors = np.floor(present["visits"][:, None] * shares).astype(np.int64)

    # The operator releases a cell-hour's largest home regions only.
    smaller = np.argsort(-visitors, axis=1)[:, HOME_REGIONS_RELEASED:]
    np.put_along_axis(visitors, smaller, 0, axis=1)
    kept_row, kept_region = np.nonzero(visitors >= UPSTREAM_MIN_COUNT)
    table = pa.table(
        {
            "cell": pa.concat_arrays([present["cell"], present["cell"].take(pa.array(kept_row))]),
            "hour": pa.concat_arrays([present["hour"], present["hour"].take(pa.array(kept_row))]),
            "home_region": pa.array(["*"] * len(own) + [codes[region] for region in kept_region]),
            "visitors": pa.array(np.concatenate([present["visits"], visitors[kept_row, kept_region]])),
        }
    )
    return _write(table, path, HOME.columns)


def write_trips_csv(*, path: Path, presence_path: Path, city: City = DEMO_CITY) -> int:
    """Trips between the districts per hour, a share of the people present; returns the row count."""
    present = _everyone(presence_path)
    east_km, north_km = _cell_centres_km(present["cell"], city)
    district = _district_of(east_km, north_km)
    hours, hour_index = np.unique(present["hour"].to_numpy(zero_copy_only=False), return_inverse=True)
    local_hour = np.zeros(len(hours), dtype=np.int64)
    local_hour[hour_index] = present["local_hour"]
    people = np.zeros((len(hours), len(DISTRICTS)))
    np.add.at(people, (hour_index, district), present["visits"])

    codes, centres, weights = _regions(city)
    centres, weights = centres[: len(DISTRICTS)], weights[: len(DISTRICTS)]
    distance = np.hypot(centres[:, None, 0] - centres[None, :, 0], centres[:, None, 1] - centres[None, :, 1])
    gravity = weights[None, :] / (1.0 + distance)
    np.fill_diagonal(gravity, STAY_WEIGHT)
    gravity /= gravity.sum(axis=1, keepdims=True)
    starting = people * TRIP_RATE[local_hour][:, None]
    trips = np.floor(starting[:, :, None] * gravity[None, :, :]).astype(np.int64)  # hour, origin, destination

    hour, origin, destination = np.nonzero(trips >= UPSTREAM_MIN_COUNT)
    table = pa.table(
        {
            "origin": pa.array([codes[o] for o in origin]),
            "destination": pa.array([codes[d] for d in destination]),
            "hour": pa.array(hours[hour]),
            "trips": pa.array(trips[hour, origin, destination]),
        }
    )
    return _write(table, path, TRIPS.columns)


def _everyone(presence_path: Path) -> dict:
    """The presence file's "*,*" rows: cell and hour (text), people, and the local hour."""
    table = pacsv.read_csv(
        presence_path,
        convert_options=pacsv.ConvertOptions(column_types={"cell": pa.string(), "hour": pa.string()}),
    )
    table = table.filter(pc.and_(pc.equal(table["age_band"], "*"), pc.equal(table["gender"], "*")))
    instants = pc.assume_timezone(pc.strptime(table["hour"], format="%Y-%m-%dT%H:%M:%SZ", unit="s"), "UTC")
    local = pc.hour(pc.cast(instants, pa.timestamp("s", tz="Europe/Berlin")))
    return {
        "cell": table["cell"].combine_chunks(),
        "hour": table["hour"].combine_chunks(),
        "visits": table["visits"].to_numpy().astype(np.int64),
        "local_hour": local.to_numpy(),
    }


def _cell_centres_km(cells: pa.Array, city: City) -> tuple[np.ndarray, np.ndarray]:
    corners = {code: cell_corner(code) for code in pc.unique(cells).to_pylist()}
    north = np.array([corners[code][0] for code in cells.to_pylist()])
    east = np.array([corners[code][1] for code in cells.to_pylist()])
    return (east - city.origin_east + CELL_M / 2) / 1000, (north - city.origin_north + CELL_M / 2) / 1000


def _district_of(east_km: np.ndarray, north_km: np.ndarray) -> np.ndarray:
    cols, rows = DISTRICT_CELLS
    column = np.clip((east_km * 1000 // (cols * CELL_M)).astype(int), 0, 2)
    row = np.clip((north_km * 1000 // (rows * CELL_M)).astype(int), 0, 1)
    return row * 3 + column


def _regions(city: City) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Codes, centres (km from the city's corner) and weights: districts first, then towns."""
    cols, rows = DISTRICT_CELLS
    codes = [code for code, *_ in DISTRICTS] + [code for code, *_ in MUNICIPALITIES]
    centres = [((col + cols / 2) * CELL_M / 1000, (row + rows / 2) * CELL_M / 1000) for _, _, col, row in DISTRICTS]
    centres += [(east + TOWN_KM / 2, north + TOWN_KM / 2) for _, _, east, north in MUNICIPALITIES]
    weights = [1.0] * len(DISTRICTS) + [TOWN_WEIGHT] * len(MUNICIPALITIES)
    return codes, np.array(centres), np.array(weights)


def region_feature(code: str, name: str, box_m: tuple[float, float, float, float]) -> dict:
    """A GeoJSON feature (EPSG:4326) of a box given as east, north, width, height in EPSG:3035 metres."""
    east, north, width, height = box_m
    polygon = Polygon.from_bbox((east, north, east + width, north + height))
    polygon.srid = 3035
    polygon.transform(4326)
    ring = [[round(x, GEOJSON_DECIMALS), round(y, GEOJSON_DECIMALS)] for x, y in polygon.exterior_ring.coords]
    return {
        "type": "Feature",
        "properties": {"code": code, "name": name},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }


def _write(table: pa.Table, path: Path, columns: list[str]) -> int:
    with path.open("wb") as out:
        out.write((",".join(columns) + "\n").encode())
        pacsv.write_csv(table.select(columns), out, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    return table.num_rows
