"""A small test city: known cells with known counts, and areas drawn over them."""

import datetime as dt
from collections.abc import Callable, Iterable
from pathlib import Path

from django.contrib.gis.geos import Polygon

from insights.grid import cell_code
from insights.grid import cell_id as grid_cell_id
from insights.services import presence_load

ORIGIN_EAST = 4_483_000
ORIGIN_NORTH = 3_136_500
CELL = 250
HOUR = dt.timedelta(hours=1)


def code(col: int, row: int) -> str:
    return cell_code(ORIGIN_NORTH + row * CELL, ORIGIN_EAST + col * CELL)


def cell_id_of(cell: tuple[int, int]) -> int:
    col, row = cell
    return grid_cell_id(ORIGIN_NORTH + row * CELL, ORIGIN_EAST + col * CELL)


def hours(start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    return [start + i * HOUR for i in range(int((end - start) / HOUR))]


def write_presence(path: Path, rows: Iterable[tuple[str, dt.datetime, str, str, int]]) -> Path:
    with path.open("w") as out:
        out.write("cell,hour,age_band,gender,visits\n")
        for cell, hour, age_band, gender, visits in rows:
            out.write(f"{cell},{hour:%Y-%m-%dT%H:%M:%SZ},{age_band},{gender},{visits}\n")
    return path


def load_totals(
    path: Path,
    *,
    cells: list[tuple[int, int]],
    start: dt.datetime,
    end: dt.datetime,
    visits: Callable[[tuple[int, int], dt.datetime], int],
) -> dict[tuple[tuple[int, int], dt.datetime], int]:
    """Load all-ages/all-genders counts for `cells` over [start, end) UTC; returns what was loaded."""
    loaded = {(cell, hour): visits(cell, hour) for cell in cells for hour in hours(start, end)}
    write_presence(path, ((code(*cell), hour, "*", "*", value) for (cell, hour), value in loaded.items()))
    presence_load(path=path)
    return loaded


def square(col: float, row: float, cols: float, rows: float) -> Polygon:
    """A rectangle on the grid in EPSG:4326, from cell (col, row) spanning cols x rows cells."""
    east, north = ORIGIN_EAST + col * CELL, ORIGIN_NORTH + row * CELL
    rectangle = Polygon.from_bbox((east, north, east + cols * CELL, north + rows * CELL))
    rectangle.srid = 3035
    rectangle.transform(4326)
    return rectangle


def geojson(polygon: Polygon) -> dict:
    return {"type": "Polygon", "coordinates": [list(map(list, ring)) for ring in polygon.coords]}
