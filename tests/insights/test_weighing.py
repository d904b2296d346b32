"""An area weighed in the worker (insights/weighing.py, insights.areas.weighed) gives the cells and
shares PostGIS gives (insights.selectors.CELL_SHARES_SQL), in the same order, on awkward areas."""

import struct

import numpy as np
import pytest
import shapely
from django.conf import settings
from django.contrib.gis.geos import GEOSGeometry, MultiPolygon, Polygon
from django.db import connection
from footfall_kernels import area_rings, covered

from insights.areas import weighed
from insights.catalogue import catalogue
from insights.grid import cell_id
from insights.selectors import CELL_SHARES_SQL, MIN_SHARE
from insights.weighing import _srid_and_heights, in_grid_crs
from tests import grid

# The grid's cells: a block of 10 × 8 with a gap (cells never published), and four cells where
# codes change their number of digits (north 10,000 km, east 1,000 km), which orders them apart.
GAP = {(4, 4), (5, 4), (7, 1)}
BLOCK = [(col, row) for col in range(10) for row in range(8) if (col, row) not in GAP]
FAR = [(northing, easting) for northing in (9_999_750, 10_000_000) for easting in (999_750, 1_000_000)]


@pytest.fixture
def cells(db):
    """The cells in insights_cell as a release build registers them (insights/releases.py)."""
    corners = [(grid.ORIGIN_NORTH + row * grid.CELL, grid.ORIGIN_EAST + col * grid.CELL) for col, row in BLOCK] + FAR
    with connection.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO insights_cell (id, code, geometry)"
            " VALUES (%(id)s, format('CRS3035RES%%smN%%sE%%s', %(res)s, %(north)s, %(east)s),"
            "         ST_MakeEnvelope(%(east)s, %(north)s, %(east)s + %(res)s, %(north)s + %(res)s, 3035))",
            [
                {"id": cell_id(north, east), "north": north, "east": east, "res": settings.GRID_RESOLUTION_M}
                for north, east in corners
            ],
        )


def polygon(*corners: tuple[float, float], holes=(), srid: int = 4326) -> Polygon:
    """A polygon through the corners given in cells from the test grid's origin (EPSG:3035), in srid."""

    def ring(points):
        at = [(grid.ORIGIN_EAST + col * grid.CELL, grid.ORIGIN_NORTH + row * grid.CELL) for col, row in points]
        return [*at, at[0]]

    shape = Polygon(ring(corners), *(ring(hole) for hole in holes), srid=3035)
    shape.transform(srid)
    return shape


def box(col: float, row: float, cols: float, rows: float, srid: int = 4326) -> Polygon:
    return polygon((col, row), (col + cols, row), (col + cols, row + rows), (col, row + rows), srid=srid)


AREAS = {
    "a multipolygon off the grid lines": MultiPolygon(
        box(0.3, 0.2, 2.4, 1.7), polygon((6.1, 1.2), (8.7, 1.9), (7.2, 4.6)), srid=4326
    ),
    "holes, one a diamond": polygon(
        (0.5, 0.5),
        (6.5, 0.5),
        (6.5, 6.5),
        (0.5, 6.5),
        holes=[[(2.2, 2.3), (4.1, 2.3), (4.1, 3.9), (2.2, 3.9)], [(5, 4.5), (5.8, 5.3), (5, 6.1), (4.2, 5.3)]],
    ),
    "whole cells inside, in a hole and inside again along a row": polygon(
        (0.5, 0.5), (8.5, 0.5), (8.5, 7.5), (0.5, 7.5), holes=[[(2.5, 1.5), (5.5, 1.5), (5.5, 6.5), (2.5, 6.5)]]
    ),
    "along the cell edges, concave": polygon((1, 1), (6, 1), (6, 3), (3, 3), (3, 6), (1, 6)),
    "along the cell edges, over the gap": box(3, 3, 4, 3),
    "a sliver below MIN_SHARE and one above": MultiPolygon(
        box(1, 1, 2, 2), box(3, 1, MIN_SHARE / 2, 1), box(5, 1, 3 * MIN_SHARE, 1), srid=4326
    ),
    "diagonals through the cells' corners": polygon((0, 0), (6, 0), (0, 6), srid=3035),
    "a cell's own square": box(2, 2, 1, 1, srid=3035),
    "outside the grid": box(40, 40, 3, 2),
    "in the grid's CRS, off the lines": polygon((0.4, 0.7), (8.2, 1.1), (5.5, 7.3), (1.1, 5.9), srid=3035),
    "in web mercator": polygon((0.4, 0.7), (8.2, 1.1), (5.5, 7.3), (1.1, 5.9), srid=3857),
    "in UTM 33N": polygon((0.4, 0.7), (8.2, 1.1), (5.5, 7.3), (1.1, 5.9), srid=25833),
}


def far_square(srid: int = 3035) -> Polygon:
    """Over the four cells whose codes differ in their number of digits."""
    shape = Polygon.from_bbox((999_800, 9_999_900, 1_000_100, 10_000_200))
    shape.srid = 3035
    return shape


def in_postgis(geometry) -> list[tuple[int, str, float]]:
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH {CELL_SHARES_SQL} SELECT cell_id, code, share FROM covered ORDER BY code",
            {"geometry": bytes(geometry.ewkb), "min_share": MIN_SHARE},
        )
        return cursor.fetchall()


@pytest.mark.parametrize("name", [*AREAS, "codes of other lengths"])
def test_an_area_weighed_in_the_worker_has_postgis_cells_and_shares(cells, name):
    geometry = AREAS.get(name) or far_square()
    expected = in_postgis(geometry)

    found = weighed(bytes(geometry.ewkb), catalogue().state, b"").cells

    assert [(cell, code) for cell, code, _ in found] == [(cell, code) for cell, code, _ in expected]
    assert [share for _, _, share in found] == pytest.approx([share for _, _, share in expected], rel=1e-9, abs=1e-12)


def test_the_awkward_areas_are_awkward(cells):
    """The areas above test what they are named for: partial and whole cells, slivers, none."""
    shares = {name: [share for _, _, share in in_postgis(geometry)] for name, geometry in AREAS.items()}

    assert all(0 < share < 1 for share in shares["a multipolygon off the grid lines"][:3])
    assert shares["outside the grid"] == []
    assert len(shares["a sliver below MIN_SHARE and one above"]) == 5  # the four cells and one sliver
    assert min(shares["a sliver below MIN_SHARE and one above"]) == pytest.approx(3 * MIN_SHARE, rel=1e-3)
    assert shares["a cell's own square"] == [1.0]
    assert shares["diagonals through the cells' corners"].count(0.5) == 6
    assert len(in_postgis(far_square())) == 4
    # The area with a hole, along row 2: whole cells inside (1, 6, 7), none in the hole (3, 4) or past it (9).
    holed = AREAS["whole cells inside, in a hole and inside again along a row"]
    row = {code: share for _, code, share in in_postgis(holed)}
    assert [row.get(grid.code(col, 2)) for col in (1, 3, 4, 6, 7, 9)] == [1.0, None, None, 1.0, 1.0, None]


WITH_HEIGHTS = "SRID=4326;POLYGON Z ((13.4 52.5 30, 13.41 52.5 31, 13.41 52.51 32, 13.4 52.5 30))"


@pytest.mark.parametrize("name", [*AREAS, "with heights"])
def test_an_area_is_moved_to_the_grids_crs_as_postgis_moves_it_to_the_bit(db, name):
    geometry = AREAS.get(name) or GEOSGeometry(WITH_HEIGHTS)
    with connection.cursor() as cursor:
        cursor.execute("SELECT ST_AsBinary(ST_Force2D(ST_Transform(%s::geometry, 3035)))", [bytes(geometry.ewkb)])
        (moved,) = cursor.fetchone()

    rings = in_grid_crs(bytes(geometry.ewkb))

    assert np.column_stack((rings.east, rings.north)).tobytes() == (
        shapely.get_coordinates(shapely.from_wkb(bytes(moved))).tobytes()
    )
    parts = shapely.get_parts(shapely.from_wkb(bytes(moved)))
    exteriors = [[True] + [False] * shapely.get_num_interior_rings(part) for part in parts]
    assert rings.exterior.tolist() == [ring for part in exteriors for ring in part]
    assert rings.ends.tolist() == np.cumsum(shapely.get_num_coordinates(shapely.get_rings(parts))).tolist()


def clipped_shares(area: shapely.Geometry, span: tuple[int, int, int, int], resolution: float) -> np.ndarray:
    """Each cell of the span's share inside the area, intersected by GEOS cell by cell (not
    clip_by_rect, which a helper's review found wrong on some vertices on a cell's lines)."""
    first_row, last_row, first_column, last_column = span
    rows, columns = np.mgrid[first_row : last_row + 1, first_column : last_column + 1]
    east, north = columns.ravel() * resolution, rows.ravel() * resolution
    pieces = shapely.intersection(area, shapely.box(east, north, east + resolution, north + resolution))
    return (shapely.area(pieces) / resolution**2).reshape(rows.shape)


def star(centre: tuple[float, float], points: int, seed: int) -> list[tuple[float, float]]:
    rng = np.random.default_rng(seed)
    angles = np.sort(rng.uniform(0, 2 * np.pi, points))
    radii = rng.uniform(200, 1_500, points)
    return list(zip(centre[0] + radii * np.cos(angles), centre[1] + radii * np.sin(angles), strict=True))


RESOLUTION = 250.0
ORIGIN = (4_321_000.0, 3_210_000.0)  # a cell's corner in the grid's CRS
SHAPES = {
    "a star of 80 points": shapely.Polygon(star(ORIGIN, 80, 1)),
    "a star with a hole, clockwise": shapely.Polygon(
        star(ORIGIN, 40, 2)[::-1],
        [shapely.box(ORIGIN[0] - 90, ORIGIN[1] - 60, ORIGIN[0] + 130, ORIGIN[1] + 140).exterior.coords],
    ),
    "two parts, one along the lines, edges along rows inside them": shapely.MultiPolygon(
        [
            shapely.box(ORIGIN[0] - 1_000, ORIGIN[1] - 500, ORIGIN[0] - 250, ORIGIN[1] + 750),
            shapely.Polygon(
                [(ORIGIN[0], ORIGIN[1]), (ORIGIN[0] + 900, ORIGIN[1] + 60), (ORIGIN[0] + 900, ORIGIN[1] + 310.5),
                 (ORIGIN[0] + 400, ORIGIN[1] + 310.5), (ORIGIN[0] + 120, ORIGIN[1] + 700)]
            ),
        ]
    ),
    "a notch with its vertices on the cells' lines (GEOS's clip_by_rect gets it wrong)": shapely.Polygon(
        [(4321250, 3210000), (4321125, 3209875), (4321000, 3210000), (4321000, 3209125), (4321375, 3209500)]
    ),
    "through the cells' corners": shapely.Polygon(
        [(ORIGIN[0], ORIGIN[1]), (ORIGIN[0] + 1_500, ORIGIN[1]), (ORIGIN[0], ORIGIN[1] + 1_500)]
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", SHAPES)
def test_the_area_in_each_cell_is_the_area_geos_clips(name):
    area = SHAPES[name]
    first_row, last_row, first_column, last_column = span = (
        int(area.bounds[1] // RESOLUTION),
        int(area.bounds[3] // RESOLUTION),
        int(area.bounds[0] // RESOLUTION),
        int(area.bounds[2] // RESOLUTION),
    )
    east, north, ends, exterior = area_rings(shapely.to_wkb(area))
    shares = np.zeros((last_row - first_row + 1, last_column - first_column + 1))

    covered(
        np.frombuffer(east),
        np.frombuffer(north),
        np.frombuffer(ends, np.int64),
        np.frombuffer(exterior, np.uint8),
        RESOLUTION,
        first_row,
        first_column,
        shares,
    )

    expected = clipped_shares(area, span, RESOLUTION)
    assert shares == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert 0 < shares.sum() * RESOLUTION**2 == pytest.approx(area.area, rel=1e-12)
    # A cell the boundary does not touch is wholly inside or outside: exactly 1 or 0, as GEOS says.
    rows, columns = np.mgrid[first_row : last_row + 1, first_column : last_column + 1]
    east, north = columns * RESOLUTION, rows * RESOLUTION
    untouched = ~shapely.intersects(area.boundary, shapely.box(east, north, east + RESOLUTION, north + RESOLUTION))
    assert untouched.any() and (shares[untouched] == expected[untouched]).all()
    assert set(np.unique(shares[untouched])) <= {0.0, 1.0}


def test_points_outside_the_span_are_refused():
    shares = np.zeros((2, 2))
    east, north = np.array([0.0, 600.0, 0.0, 0.0]), np.array([0.0, 0.0, 400.0, 0.0])
    ring = np.array([4]), np.array([1], dtype=np.uint8)

    with pytest.raises(ValueError):  # a row of 2 cells of 250 m ends at 500 m; 600 m is past it
        covered(east, north, *ring, RESOLUTION, 0, 0, shares)
    with pytest.raises(ValueError):  # and a column
        covered(north, east, *ring, RESOLUTION, 0, 0, shares)
    with pytest.raises(ValueError):  # ring ends past the points
        covered(east / 2, north / 2, np.array([5]), ring[1], RESOLUTION, 0, 0, shares)
    with pytest.raises(ValueError):  # a coordinate that is not a number
        covered(east / 2, np.array([0.0, 0.0, np.nan, 0.0]), *ring, RESOLUTION, 0, 0, shares)
    with pytest.raises(ValueError):  # nor the resolution
        covered(east / 2, north / 2, *ring, np.nan, 0, 0, shares)
    assert not shares.any()


def test_what_is_not_a_polygon_is_refused():
    with pytest.raises(ValueError, match="not a polygon"):
        area_rings(shapely.to_wkb(shapely.LineString([(0, 0), (1, 1)])))
    with pytest.raises(ValueError, match="not a polygon"):  # nor inside a collection
        area_rings(shapely.to_wkb(shapely.GeometryCollection([shapely.Point(0, 0)])))
    with pytest.raises(ValueError, match="cut short"):
        area_rings(shapely.to_wkb(shapely.box(0, 0, 1, 1))[:-3])


@pytest.mark.parametrize("order", ["<", ">"])
def test_an_ewkb_head_gives_the_srid_and_whether_points_have_heights(order):
    def head(kind: int, srid: int | None = 4326) -> bytes:
        return bytes([order == "<"]) + struct.pack(f"{order}I", kind) + struct.pack(f"{order}I", srid or 0)

    srid_flag = 0x20000000
    assert _srid_and_heights(head(3 | srid_flag)) == (4326, False)
    assert _srid_and_heights(head(6 | srid_flag, 3035)) == (3035, False)
    assert _srid_and_heights(head(3 | srid_flag | 0x80000000)) == (4326, True)  # EWKB Z
    assert _srid_and_heights(head(3 | srid_flag | 0x40000000)) == (4326, False)  # M: no heights
    assert _srid_and_heights(head(3 | srid_flag | 0xC0000000)) == (4326, True)  # ZM
    for iso, heights in ((1003, True), (2003, False), (3003, True), (1006, True)):
        assert _srid_and_heights(head(iso | srid_flag)) == (4326, heights)
    for short in range(9):
        with pytest.raises(ValueError, match="no SRID"):
            _srid_and_heights(head(3 | srid_flag)[:short])
    with pytest.raises(ValueError, match="no SRID"):
        _srid_and_heights(head(3))
    with pytest.raises(ValueError, match="no SRID"):  # not a byte order
        _srid_and_heights(b"\x07" + head(3 | srid_flag)[1:])


def test_an_area_without_its_srid_in_its_ewkb_is_refused():
    for ewkb in (shapely.to_wkb(shapely.box(13.4, 52.5, 13.41, 52.51)), b"\x01", b""):
        with pytest.raises(ValueError, match="no SRID"):
            in_grid_crs(ewkb)


def test_an_area_in_the_grids_crs_or_big_endian_is_read_as_it_is():
    square = GEOSGeometry("SRID=3035;POLYGON ((4321000 3210000, 4321250 3210000, 4321250 3210250, 4321000 3210000))")
    rings = in_grid_crs(bytes(square.ewkb))
    assert rings.east.tolist() == [4321000, 4321250, 4321250, 4321000]
    big_endian = shapely.to_wkb(shapely.from_wkb(bytes(square.ewkb)), byte_order=0, include_srid=True)
    assert big_endian[0] == 0
    assert in_grid_crs(big_endian).north.tolist() == rings.north.tolist()
