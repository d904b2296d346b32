"""An area weighed against the grid in the worker: its cells and the share of each inside it.

The same cells and shares as PostGIS gives (insights/selectors.py: CELL_SHARES_SQL; a test compares
them), without PostGIS: the grid is regular, so the cells an area can touch are those in its
bounding box, and the area of it inside each is summed edge by edge over its rings (Green's
theorem, kernels/: exact, in one call, where clipping each cell the boundary passes through with
GEOS took a few dozen calls). A cell no edge passes through lies wholly inside the area (share 1,
as ST_Within gives) or wholly outside. The area is moved to the grid's CRS by GDAL with the PROJ
that PostGIS uses, so its coordinates are PostGIS's to the bit.
"""

import functools
import struct
from ctypes import POINTER, c_double, c_int, c_void_p
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.contrib.gis.gdal import CoordTransform, GDALException, SpatialReference
from django.contrib.gis.gdal.libgdal import lgdal
from django.contrib.gis.geos import GEOSGeometry
from footfall_kernels import area_rings, covered

from insights.grid import ROW, cell_codes, cell_corners

GRID_SRID = 3035

# GDAL's transformation of points, which GEOSGeometry.transform (OGR_G_Transform) applies to each
# of a geometry's points: given all of them at once it skips the geometry's round trip through
# OGR, a tenth of a millisecond of a new area's first report, and gives the same bits.
_transform_points = lgdal.OCTTransform
_transform_points.restype = c_int
_transform_points.argtypes = [c_void_p, c_int, POINTER(c_double), POINTER(c_double), POINTER(c_double)]


@dataclass(frozen=True)
class Rings:
    """An area's rings in the grid's CRS: every point's east and north, where each ring ends, and
    whether it is an exterior (kernels/: area_rings)."""

    east: np.ndarray
    north: np.ndarray
    ends: np.ndarray
    exterior: np.ndarray


def in_grid_crs(ewkb: bytes) -> Rings:
    """The area (its EWKB, as GEOSGeometry.ewkb writes it) as rings in the grid's CRS (EPSG:3035),
    as ST_Transform moves them. Read from the EWKB, not asked of GEOS: a new area's first report
    runs with the CPU's caches cold, when each GEOS call costs tens of microseconds."""
    srid, heights = _srid_and_heights(ewkb)
    if srid != GRID_SRID and heights:  # heights too: GDAL's geometry transform keeps them
        ewkb = GEOSGeometry(memoryview(ewkb)).transform(_to_grid(srid), clone=True).wkb
        srid = GRID_SRID
    east, north, ends, exterior = area_rings(ewkb)
    rings = Rings(
        np.frombuffer(east), np.frombuffer(north), np.frombuffer(ends, np.int64), np.frombuffer(exterior, np.uint8)
    )
    if srid != GRID_SRID:
        to_double = POINTER(c_double)
        moved = _transform_points(
            _to_grid(srid).ptr,
            len(rings.east),
            rings.east.ctypes.data_as(to_double),
            rings.north.ctypes.data_as(to_double),
            None,
        )
        if not moved:
            raise GDALException("the area could not be moved to the grid's CRS")
    return rings


_WKB_TYPE = {0: struct.Struct(">I"), 1: struct.Struct("<I")}  # by the byte order's byte
_EWKB_HEIGHTS, _EWKB_SRID = 0x80000000, 0x20000000


def _srid_and_heights(ewkb: bytes) -> tuple[int, bool]:
    """The area's SRID (EWKB's) and whether its points have heights (EWKB's flag, or an ISO type
    of the 1000s or 3000s); area_rings checks the rest."""
    order = _WKB_TYPE.get(ewkb[0]) if len(ewkb) >= 9 else None
    kind = order.unpack_from(ewkb, 1)[0] if order else 0
    if not kind & _EWKB_SRID:
        raise ValueError("the area's EWKB has no SRID")
    heights = bool(kind & _EWKB_HEIGHTS) or (kind & 0x0FFFFFFF) // 1000 in (1, 3)
    return order.unpack_from(ewkb, 5)[0], heights


def prepare() -> None:
    """Read PROJ's database now, for the longitude/latitude areas buyers draw."""
    _to_grid(4326)


@functools.cache
def _to_grid(srid: int) -> CoordTransform:
    """Kept per worker process: PROJ's first transformation in a process reads its database
    (about 100 ms on a busy machine), later ones take microseconds."""
    return CoordTransform(SpatialReference(srid), SpatialReference(GRID_SRID))


def span(area: Rings) -> tuple[int, int, int, int]:
    """First and last row, first and last column of the cells the area (in the grid's CRS) can touch."""
    resolution = settings.GRID_RESOLUTION_M
    return (
        int(area.north.min() // resolution),
        int(area.north.max() // resolution),
        int(area.east.min() // resolution),
        int(area.east.max() // resolution),
    )


def cell_shares(area: Rings, cells: np.ndarray, *, min_share: float) -> tuple[list[int], list[str], list[float]]:
    """Of the cells (ids, those of the area's span), those with at least min_share inside the area
    (in the grid's CRS): their ids, codes and shares, by code."""
    resolution = settings.GRID_RESOLUTION_M
    first_row, last_row, first_column, last_column = span(area)
    inside = np.zeros((last_row - first_row + 1, last_column - first_column + 1))
    covered(area.east, area.north, area.ends, area.exterior, float(resolution), first_row, first_column, inside)
    rows, columns = np.divmod(cells, ROW)
    share = inside[rows - first_row, columns - first_column]
    kept = share >= min_share
    ids, shares = cells[kept], share[kept]
    order = _by_code(ids)
    return ids[order].tolist(), cell_codes(ids[order]), shares[order].tolist()


def _by_code(ids: np.ndarray) -> np.ndarray:
    """The order of the cells' codes (insights.grid.cell_codes) as text. Where the northings are
    all of one number of digits, and the eastings too, that is the order of their ids (row, then
    column); an area where they change their number of digits (at 1,000 km or 10,000 km) has its
    codes sorted as text (…N10000000E… before …N9999750E…, …E1000000 before …E999750)."""
    northings, eastings = cell_corners(ids)
    if len(ids) == 0 or (_one_width(northings) and _one_width(eastings)):
        return np.argsort(ids, kind="stable")
    return np.argsort(np.array(cell_codes(ids)), kind="stable")


def _one_width(values: np.ndarray) -> bool:
    """Whether the values, written out, sort as text as they do as numbers: of one number of digits, none negative."""
    low, high = values.min().item(), values.max().item()
    return 0 <= low and len(str(low)) == len(str(high))
