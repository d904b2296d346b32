"""An area weighed against the grid in the worker, with GEOS: its cells and the share of each inside it.

The same cells and shares as PostGIS gives (insights/selectors.py: CELL_SHARES_SQL; a test compares
them), without PostGIS: the grid is regular, so the cells an area can touch are those in its
bounding box, and only those its boundary passes through are clipped. A cell whose box the
boundary does not pass through lies wholly inside the area (share 1, as ST_Within gives) or
wholly outside, which its centre tells (one centre for a run of them along a row). The area is
moved to the grid's CRS by GDAL with the PROJ that PostGIS uses, so its coordinates are
PostGIS's to the bit.
"""

import functools
from ctypes import POINTER, c_double, c_int, c_void_p

import numpy as np
import shapely
from django.conf import settings
from django.contrib.gis.gdal import CoordTransform, GDALException, SpatialReference
from django.contrib.gis.gdal.libgdal import lgdal
from django.contrib.gis.geos import GEOSGeometry

from insights.grid import ROW, cell_codes, cell_corners

GRID_SRID = 3035

# GDAL's transformation of points, which GEOSGeometry.transform (OGR_G_Transform) applies to each
# of a geometry's points: given all of them at once it skips the geometry's round trip through
# OGR, a tenth of a millisecond of a new area's first report, and gives the same bits.
_transform_points = lgdal.OCTTransform
_transform_points.restype = c_int
_transform_points.argtypes = [c_void_p, c_int, POINTER(c_double), POINTER(c_double), POINTER(c_double)]


def in_grid_crs(geometry: GEOSGeometry) -> shapely.Geometry:
    """The geometry in the grid's CRS (EPSG:3035), as ST_Transform gives it, as shapely's."""
    if geometry.srid != GRID_SRID and geometry.hasz:  # heights too: GDAL's geometry transform keeps them
        geometry = geometry.transform(_to_grid(geometry.srid), clone=True)
    area = shapely.from_wkb(bytes(geometry.wkb))
    if geometry.srid == GRID_SRID:
        return area
    points = shapely.get_coordinates(area)
    east, north = np.ascontiguousarray(points[:, 0]), np.ascontiguousarray(points[:, 1])
    to_double = POINTER(c_double)
    moved = _transform_points(
        _to_grid(geometry.srid).ptr, len(points), east.ctypes.data_as(to_double), north.ctypes.data_as(to_double), None
    )
    if not moved:
        raise GDALException("the area could not be moved to the grid's CRS")
    return shapely.set_coordinates(area, np.column_stack((east, north)))


def prepare() -> None:
    """Read PROJ's database now, for the longitude/latitude areas buyers draw."""
    _to_grid(4326)


@functools.cache
def _to_grid(srid: int) -> CoordTransform:
    """Kept per worker process: PROJ's first transformation in a process reads its database
    (about 100 ms on a busy machine), later ones take microseconds."""
    return CoordTransform(SpatialReference(srid), SpatialReference(GRID_SRID))


def span(area: shapely.Geometry) -> tuple[int, int, int, int]:
    """First and last row, first and last column of the cells the area (in the grid's CRS) can touch."""
    resolution = settings.GRID_RESOLUTION_M
    west, south, east, north = shapely.bounds(area).tolist()
    return (int(south // resolution), int(north // resolution), int(west // resolution), int(east // resolution))


def cell_shares(
    area: shapely.Geometry, cells: np.ndarray, *, min_share: float
) -> tuple[list[int], list[str], list[float]]:
    """Of the cells (ids, those of the area's span), those with at least min_share inside the area
    (in the grid's CRS): their ids, codes and shares, by code."""
    resolution = settings.GRID_RESOLUTION_M
    shapely.prepare(area)
    area_span = span(area)
    first_row, _, first_column, _ = area_span
    rows, columns = np.divmod(cells, ROW)
    rows, columns = rows - first_row, columns - first_column  # in the span's grid
    edge = _boundary_cells(area, resolution, area_span)
    share = _inside(area, edge, resolution, area_span)[rows, columns].astype(np.float64)
    clipped = edge[rows, columns]
    east = ((columns[clipped] + first_column) * resolution).astype(np.float64)
    north = ((rows[clipped] + first_row) * resolution).astype(np.float64)
    # GEOS's rectangle clipping: a third of a general intersection's time, the same area to float
    # noise. shapely.clip_by_rect takes one rectangle; its ufunc, shapely.lib's, takes arrays.
    pieces = shapely.lib.clip_by_rect(area, east, north, east + resolution, north + resolution)
    share[clipped] = shapely.area(pieces) / resolution**2
    kept = share >= min_share
    ids, shares = cells[kept], share[kept]
    order = _by_code(ids)
    return ids[order].tolist(), cell_codes(ids[order]), shares[order].tolist()


def _boundary_cells(polygon: shapely.Geometry, resolution: int, polygon_span: tuple[int, int, int, int]) -> np.ndarray:
    """The cells of the polygon's span (rows by columns) its boundary passes through, and a few
    more: the cells under its segments' bounding boxes, the boundary cut into segments no longer
    than a cell (each one's bounding box then spans at most three rows and three columns; the
    segment that joins a ring's last point to the next ring's first marks the cells at a corner
    of its box, clipped for nothing). A boundary that only runs along a cell's edge leaves it
    wholly inside or outside: its centre tells which. Float noise may miss a cell the boundary
    enters by a few nanometres: its share is off by as much as PostGIS's own noise."""
    first_row, last_row, first_column, last_column = polygon_span
    points = shapely.get_coordinates(shapely.segmentize(polygon, resolution))
    at = np.floor(points / resolution).astype(np.int64) - (first_column, first_row)  # each point's cell
    low, high = np.minimum(at[:-1], at[1:]), np.maximum(at[:-1], at[1:])  # each segment's box
    # Each box's first three columns and rows, held at its last: all its cells.
    spread = np.minimum(low[:, np.newaxis, :] + np.arange(3)[:, np.newaxis], high[:, np.newaxis, :])
    found = np.zeros((last_row - first_row + 1, last_column - first_column + 1), dtype=bool)
    found[spread[:, :, np.newaxis, 1], spread[:, np.newaxis, :, 0]] = True
    return found


def _inside(
    polygon: shapely.Geometry, edge: np.ndarray, resolution: int, polygon_span: tuple[int, int, int, int]
) -> np.ndarray:
    """Of the cells of the polygon's span (rows by columns) its boundary does not pass through
    (not edge), those inside it. In a row, a run of such cells lies all inside or all outside (to
    part two neighbours the boundary would pass through one), which its first cell's centre tells."""
    first_row, _, first_column, _ = polygon_span
    starts = ~edge
    starts[:, 1:] &= edge[:, :-1]
    rows, columns = np.nonzero(starts)
    east = (first_column + columns) * resolution + resolution / 2
    north = (first_row + rows) * resolution + resolution / 2
    # Each cell's run, counted from 1 through the rows (0: the edge cells before the first).
    run = np.cumsum(starts).reshape(edge.shape)
    inside = np.concatenate([[False], shapely.contains_xy(polygon, east, north)])[run]
    return inside & ~edge


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
