"""The area a report covers: its grid cells and the share of each inside it, its cells' weights.

Weighing an area is PostGIS work (insights/selectors.py: CELL_SHARES_SQL), done once per area
the service sees: the weights are stored in the database (insights_areaweights) keyed by the
area's geometry and the weighing itself, so that any worker's first report of an area seen
before (a buyer orders the same shopping centre every month) reads them in one small statement.
A worker also keeps the areas of its recent reports in memory (AREAS).

Stored weights are never stale. They hold while the grid's cells in the span of rows and
columns around the area (its bounding box and a cell more each side) are the ones they were
weighed with, their count and the sum of their ids: any cell that covers part of the area lies
in that span, and cells are only ever added, by a release build (insights/releases.py), never
moved or removed. So a cell added there is seen by the next report, which weighs the area
again; cells added elsewhere leave it be. A cell's id says where it is (insights.grid.cell_id),
so the check reads the cells' primary key only: a worker's connection that reports on areas
seen before never loads PostGIS (its first use in a connection costs 30-150 ms).
Another weighing (its SQL, MIN_SHARE) is another key.
"""

import contextlib
import functools
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import psycopg
from django.conf import settings
from django.contrib.gis.geos import GEOSGeometry
from django.db import connection, transaction

from insights.catalogue import catalogue
from insights.memo import ITEM_OVERHEAD, ByteLRU
from insights.models import AreaWeights
from insights.selectors import CELL_SHARES_SQL, MIN_SHARE


@dataclass(frozen=True)
class ReportArea:
    cells: list[tuple[int, str, float]]  # (cell id, code, share inside the area), by code

    @functools.cached_property
    def ids(self) -> list[int]:
        return [cell for cell, _, _ in self.cells]

    @functools.cached_property
    def share_array(self) -> np.ndarray:
        """Each cell's share, by position in cells."""
        return np.array([share for _, _, share in self.cells], dtype=float)


# The areas weighed lately, per worker process: a repeated area does no PostGIS work.
AREAS = ByteLRU(8 * 2**20)
AREA_CELL_BYTES = 256  # a cell's tuple, code and share, and its entries in the cached arrays

# What an area's weights depend on besides its geometry: the weighing.
_WEIGHING = hashlib.sha256(f"{CELL_SHARES_SQL}{MIN_SHARE!r}".encode())

# The grid's cells in a span of rows and columns, by their ids (insights.grid.cell_id: row ×
# 100000 + column): what stored weights hold for.
_CELLS_IN_SPAN = """
    SELECT count(*), coalesce(sum(c.id), 0)::bigint
    FROM generate_series({span}.first_row, {span}.last_row) grid_row
    JOIN insights_cell c
      ON c.id BETWEEN grid_row * 100000 + {span}.first_column AND grid_row * 100000 + {span}.last_column
"""
_STORED_SQL = f"""
    SELECT w.cell_ids, w.codes, w.shares FROM insights_areaweights w
    WHERE w.key = %(key)s AND (w.grid_cells, w.grid_cell_ids) = ({_CELLS_IN_SPAN.format(span="w")})
"""
# Weighed in PostGIS, with the cells in its span in the same snapshot, stored and returned.
_WEIGH_SQL = f"""
    WITH {CELL_SHARES_SQL},
    span AS (
        SELECT floor(ST_YMin(g) / %(resolution)s)::int - 1 AS first_row,
               floor(ST_YMax(g) / %(resolution)s)::int + 1 AS last_row,
               floor(ST_XMin(g) / %(resolution)s)::int - 1 AS first_column,
               floor(ST_XMax(g) / %(resolution)s)::int + 1 AS last_column
        FROM area
    ),
    in_span AS (SELECT found.* FROM span, LATERAL ({_CELLS_IN_SPAN.format(span="span")}) found),
    weighed AS (
        SELECT coalesce(array_agg(cell_id ORDER BY code), '{{}}') AS cell_ids,
               coalesce(array_agg(code ORDER BY code), '{{}}') AS codes,
               coalesce(array_agg(share ORDER BY code), '{{}}') AS shares
        FROM covered
    )
    INSERT INTO insights_areaweights (key, first_row, last_row, first_column, last_column, grid_cells,
                                      grid_cell_ids, cell_ids, codes, shares, weighed_at)
    SELECT %(key)s, span.*, in_span.*, weighed.*, now() FROM span, in_span, weighed
    ON CONFLICT (key) DO UPDATE SET
        first_row = excluded.first_row, last_row = excluded.last_row, first_column = excluded.first_column,
        last_column = excluded.last_column, grid_cells = excluded.grid_cells, grid_cell_ids = excluded.grid_cell_ids,
        cell_ids = excluded.cell_ids, codes = excluded.codes, shares = excluded.shares, weighed_at = excluded.weighed_at
    RETURNING cell_ids, codes, shares
"""


def stored_key(geometry: GEOSGeometry) -> str:
    """The key of the area's stored weights."""
    key = _WEIGHING.copy()
    key.update(bytes(geometry.ewkb))
    return key.hexdigest()


def forget_stored(geometry: GEOSGeometry) -> None:
    """Drop the area's stored weights: its next report weighs it as a new area (the benchmark)."""
    AreaWeights.objects.filter(key=stored_key(geometry)).delete()


@contextlib.contextmanager
def report_area(geometry: GEOSGeometry) -> Iterator[ReportArea]:
    """The area's cells (id, code, share), for all the passes of a report: a pass inside
    another's `with` reuses them. Kept in the worker for later reports too, keyed by the
    geometry and the catalogue's state (insights/catalogue.py), which a release's build changes;
    else read from the stored weights, else weighed in PostGIS and stored."""
    ewkb = bytes(geometry.ewkb)
    made = getattr(connection, "report_area", None)
    if made and made[0] == ewkb:
        yield made[1]
        return
    held_key = (ewkb, catalogue().state)
    area = AREAS.get(held_key)
    if area is None:
        area = _stored_or_weighed(geometry)
        AREAS.put(held_key, area, ITEM_OVERHEAD + len(ewkb) + AREA_CELL_BYTES * len(area.cells))
    connection.report_area = (ewkb, area)
    try:
        yield area
    finally:
        connection.report_area = None


def _stored_or_weighed(geometry: GEOSGeometry) -> ReportArea:
    """The area's stored weights if they still hold, else its weights from PostGIS, stored."""
    params = {
        "key": stored_key(geometry),
        "geometry": bytes(geometry.ewkb),
        "min_share": MIN_SHARE,
        "resolution": settings.GRID_RESOLUTION_M,
    }
    connection.ensure_connection()
    # Django's cursors bind on the client, which gives text results only: arrays in binary decode faster.
    with psycopg.Cursor(connection.connection) as cursor:
        found = cursor.execute(_STORED_SQL, params, binary=True).fetchone()
        if found is None:
            found = _weighed(cursor, params)
    return ReportArea(cells=list(zip(*found, strict=True)))


def _weighed(cursor: psycopg.Cursor, params: dict) -> tuple[list, list, list]:
    """The area weighed in PostGIS and stored. Stored weights are a cache: a crash that loses the
    last ones costs a weighing, so when they are a transaction of their own its commit does not
    wait for the disk (4-8 ms here, more than the weighing). Inside a caller's transaction they
    are committed with it."""
    if not connection.get_autocommit():
        return cursor.execute(_WEIGH_SQL, params, binary=True).fetchone()
    with transaction.atomic():
        cursor.execute("SET LOCAL synchronous_commit = off")
        return cursor.execute(_WEIGH_SQL, params, binary=True).fetchone()
