"""Cell codes of the EPSG:3035 statistical grid, e.g. CRS3035RES250mN3260000E4530000."""

import re

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


def cell_id(northing: int, easting: int) -> int:
    """A cell's id, derived from its corner so that loading needs no lookup: N index, then E index."""
    resolution = settings.GRID_RESOLUTION_M
    return (northing // resolution) * 100_000 + easting // resolution
