"""The area a report covers: its grid cells and the share of each inside it, its cells' weights.

Weighing an area is PostGIS work (insights/selectors.py: CELL_SHARES_SQL), done once per area
the service sees: the weights are stored in the database (insights_areaweights) keyed by the
area's geometry and the weighing itself, so that any worker's first report of an area seen
before (a buyer orders the same shopping centre every month) reads them in one small statement.
A worker also keeps the areas of its recent reports in memory (AREAS).

Stored weights are never stale. They hold while the grid's cells under the area's bounding box
are the ones they were weighed with (their count and the sum of their ids): any cell that
covers part of the area lies under that box, and cells are only ever added, by a release build
(insights/releases.py), never moved or removed. So a cell added under the box is seen by the
next report, which weighs the area again. Another weighing (its SQL, MIN_SHARE) is another key.
"""

import contextlib
import functools
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import psycopg
from django.contrib.gis.geos import GEOSGeometry
from django.db import connection

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

    @functools.cached_property
    def _by_id(self) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(np.array(self.ids, dtype=np.int64))
        return np.array(self.ids, dtype=np.int64)[order], order

    def place_of(self, cell_ids: np.ndarray) -> np.ndarray:
        """The position in cells of each of the area's cell ids."""
        ids, order = self._by_id
        return order[np.searchsorted(ids, cell_ids)]


# The areas weighed lately, per worker process: a repeated area does no PostGIS work.
AREAS = ByteLRU(8 * 2**20)
AREA_CELL_BYTES = 256  # a cell's tuple, code and share, and its entries in the cached arrays

# What an area's weights depend on besides its geometry: the weighing.
_WEIGHING = hashlib.sha256(f"{CELL_SHARES_SQL}{MIN_SHARE!r}".encode())

# The grid's cells under a box: what stored weights hold for.
_UNDER_BOX = "SELECT count(*), coalesce(sum(c.id), 0)::bigint FROM insights_cell c WHERE c.geometry && {box}"
_STORED_SQL = f"""
    SELECT w.cell_ids, w.codes, w.shares FROM insights_areaweights w
    WHERE w.key = %(key)s AND (w.box_cells, w.box_cell_ids) = ({_UNDER_BOX.format(box="w.box")})
"""
# Weighed in PostGIS, with the cells under the box in the same snapshot, stored and returned.
_WEIGH_SQL = f"""
    WITH {CELL_SHARES_SQL},
    box AS (SELECT ST_Envelope(g) AS g FROM area),
    under AS ({_UNDER_BOX.format(box="(SELECT g FROM box)")}),
    weighed AS (
        SELECT coalesce(array_agg(cell_id ORDER BY code), '{{}}') AS cell_ids,
               coalesce(array_agg(code ORDER BY code), '{{}}') AS codes,
               coalesce(array_agg(share ORDER BY code), '{{}}') AS shares
        FROM covered
    )
    INSERT INTO insights_areaweights (key, box, box_cells, box_cell_ids, cell_ids, codes, shares, weighed_at)
    SELECT %(key)s, box.g, under.*, weighed.*, now() FROM box, under, weighed
    ON CONFLICT (key) DO UPDATE SET
        box = excluded.box, box_cells = excluded.box_cells, box_cell_ids = excluded.box_cell_ids,
        cell_ids = excluded.cell_ids, codes = excluded.codes, shares = excluded.shares,
        weighed_at = excluded.weighed_at
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
    params = {"key": stored_key(geometry), "geometry": bytes(geometry.ewkb), "min_share": MIN_SHARE}
    connection.ensure_connection()
    # Django's cursors bind on the client, which gives text results only: arrays in binary decode faster.
    with psycopg.Cursor(connection.connection) as cursor:
        found = cursor.execute(_STORED_SQL, params, binary=True).fetchone()
        if found is None:
            found = cursor.execute(_WEIGH_SQL, params, binary=True).fetchone()
    return ReportArea(cells=list(zip(*found, strict=True)))
