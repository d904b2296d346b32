"""An area weighed against the grid in the worker, with GEOS: its cells and the share of each inside it.

The same cells and shares as PostGIS gives (insights/selectors.py: CELL_SHARES_SQL; a test compares
them), without PostGIS: the grid is regular, so the cells an area can touch are those in its
bounding box, and only those its boundary passes through are clipped. A cell whose box the
boundary does not pass through lies wholly inside the area (share 1, as ST_Within gives) or
wholly outside, which its centre tells. The area is moved to the grid's CRS by GDAL with the
PROJ that PostGIS uses, so its coordinates are PostGIS's to the bit.
"""

import functools

import numpy as np
import shapely
from django.conf import settings
from django.contrib.gis.gdal import CoordTransform, SpatialReference
from django.contrib.gis.geos import GEOSGeometry

from insights.grid import ROW, cell_codes, cell_corners

GRID_SRID = 3035


def in_grid_crs(geometry: GEOSGeometry) -> GEOSGeometry:
    """The geometry in the grid's CRS (EPSG:3035), as ST_Transform gives it."""
    if geometry.srid == GRID_SRID:
        return geometry
    return geometry.transform(_to_grid(geometry.srid), clone=True)


def prepare() -> None:
    """Read PROJ's database now, for the longitude/latitude areas buyers draw."""
    _to_grid(4326)


@functools.cache
def _to_grid(srid: int) -> CoordTransform:
    """Kept per worker process: PROJ's first transformation in a process reads its database
    (about 100 ms on a busy machine), later ones take microseconds."""
    return CoordTransform(SpatialReference(srid), SpatialReference(GRID_SRID))


def span(area: GEOSGeometry) -> tuple[int, int, int, int]:
    """First and last row, first and last column of the cells the area (in the grid's CRS) can touch."""
    resolution = settings.GRID_RESOLUTION_M
    west, south, east, north = area.extent
    return (int(south // resolution), int(north // resolution), int(west // resolution), int(east // resolution))


def cell_shares(area: GEOSGeometry, cells: np.ndarray, *, min_share: float) -> tuple[list[int], list[str], list[float]]:
    """Of the cells (ids, those of the area's span), those with at least min_share inside the area
    (in the grid's CRS): their ids, codes and shares, by code."""
    resolution = settings.GRID_RESOLUTION_M
    polygon = shapely.from_wkb(bytes(area.wkb))
    shapely.prepare(polygon)
    northings, eastings = cell_corners(cells)
    share = np.zeros(len(cells))
    edge = np.isin(cells, _boundary_cells(polygon, resolution))
    inner = ~edge
    share[inner] = shapely.contains_xy(polygon, eastings[inner] + resolution / 2, northings[inner] + resolution / 2)
    # GEOS's rectangle clipping: a third of a general intersection's time, the same area to float noise.
    clipped = [
        shapely.clip_by_rect(polygon, east, north, east + resolution, north + resolution)
        for east, north in zip(eastings[edge].tolist(), northings[edge].tolist(), strict=True)
    ]
    share[edge] = shapely.area(clipped) / resolution**2
    kept = share >= min_share
    ids, shares = cells[kept], share[kept]
    codes = cell_codes(ids)
    order = np.argsort(np.array(codes), kind="stable")
    return ids[order].tolist(), [codes[i] for i in order.tolist()], shares[order].tolist()


def _boundary_cells(polygon: shapely.Geometry, resolution: int) -> np.ndarray:
    """The ids of the cells the polygon's boundary passes through, and a few more: the cells
    under its segments' bounding boxes, the boundary cut into segments no longer than a cell
    (each one's bounding box then spans at most three rows and three columns). A boundary that
    only runs along a cell's edge leaves it wholly inside or outside: its centre tells which.
    Float noise may miss a cell the boundary enters by a few nanometres: its share is off by as
    much as PostGIS's own noise."""
    lines = shapely.get_parts(shapely.segmentize(shapely.boundary(polygon), resolution))
    points, line = shapely.get_coordinates(lines, return_index=True)
    same = line[:-1] == line[1:]
    starts, ends = points[:-1][same], points[1:][same]
    low = np.floor(np.minimum(starts, ends) / resolution).astype(np.int64)
    high = np.floor(np.maximum(starts, ends) / resolution).astype(np.int64)
    found = []
    for row_step in range(3):
        for column_step in range(3):
            column, row = low[:, 0] + column_step, low[:, 1] + row_step
            met = (column <= high[:, 0]) & (row <= high[:, 1])
            found.append(row[met] * ROW + column[met])
    return np.unique(np.concatenate(found))
