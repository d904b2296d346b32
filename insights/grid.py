"""Cell codes of the EPSG:3035 statistical grid, e.g. CRS3035RES250mN3260000E4530000."""

import re

import numpy as np
from django.conf import settings

CELL_CODE = re.compile(r"^CRS3035RES(\d+)mN(\d+)E(\d+)$")


class InvalidCellCode(ValueError):
    pass


def cell_corner(code: str) -> tuple[int, int]:
    """Return (northing, easting) of the cell's lower-left corner, in metres."""
    match = CELL_CODE.match(code)
    if not match:
        raise InvalidCellCode(f"cell code {code!r} is not of the form CRS3035RES{{res}}mN{{northing}}E{{easting}}")
    resolution, northing, easting = (int(group) for group in match.groups())
    expected = settings.GRID_RESOLUTION_M
    if resolution != expected:
        raise InvalidCellCode(f"cell {code!r} has resolution {resolution} m; this grid is {expected} m")
    if northing % resolution or easting % resolution:
        raise InvalidCellCode(f"cell {code!r} is not aligned to the {resolution} m grid")
    return northing, easting


def cell_code(northing: int, easting: int) -> str:
    return f"CRS3035RES{settings.GRID_RESOLUTION_M}mN{northing}E{easting}"


# A cell's id is its row (northing index) times ROW plus its column (easting index).
ROW = 100_000


def cell_id(northing: int, easting: int) -> int:
    """A cell's id, derived from its corner so that loading needs no lookup: N index, then E index."""
    resolution = settings.GRID_RESOLUTION_M
    return (northing // resolution) * ROW + easting // resolution


def cell_corners(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(northing, easting) of each cell's lower-left corner, in metres, from its id."""
    rows, columns = np.divmod(ids, ROW)
    return rows * settings.GRID_RESOLUTION_M, columns * settings.GRID_RESOLUTION_M


def cell_codes(ids: np.ndarray) -> list[str]:
    """Each cell's code, from its id; a row's prefix is made once (areas of thousands of cells)."""
    northings, eastings = cell_corners(ids)
    prefixes = {northing: cell_code(northing, 0)[:-1] for northing in np.unique(northings).tolist()}
    return [
        prefixes[northing] + str(easting)
        for northing, easting in zip(northings.tolist(), eastings.tolist(), strict=True)
    ]
