"""The area a report covers: its grid cells and the share of each inside it, its cells' weights.

An area is weighed in the worker (insights/weighing.py: GEOS against the regular grid, the same
cells and shares as PostGIS's CELL_SHARES_SQL) from the grid's cells in its span of rows and
columns, read on their primary key (insights.selectors.cells_in_span): a report never loads
PostGIS in its connection (its first use there costs 30-150 ms), and a new area costs what an
area seen before does, a statement on the cells' ids and about a millisecond of GEOS per
thousand cells (PROJ's first transformation costs a worker process about 100 ms, once).
Nothing is stored in the database: reading stored weights back would cost a statement too.
A worker keeps the areas of its recent reports in memory (AREAS), keyed by the geometry and the
catalogue's state, which a release build changes: a cell the build adds under an area is seen
by the next report. The node's workers share them by the same key (insights/shared.py): a
worker's first report of an area another worker weighed reads its cells and shares from Redis,
with the area's months summed (keyed by a digest of the area's key) in the same round trip; an
area the node's record says no worker shared (insights/local_months.py) is not asked for.
"""

import contextlib
import functools
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np
from django.contrib.gis.geos import GEOSGeometry
from django.db import connection

from insights import local_months, shared
from insights.catalogue import catalogue
from insights.grid import cell_codes
from insights.memo import ITEM_OVERHEAD, ByteLRU
from insights.selectors import MIN_SHARE, cells_in_span
from insights.summed import SummedMonth
from insights.weighing import cell_shares, in_grid_crs, span


@dataclass(frozen=True)
class ReportArea:
    cells: list[tuple[int, str, float]]  # (cell id, code, share inside the area), by code
    digest: bytes  # of its key (geometry, the catalogue's state, MIN_SHARE): the node's months summed are keyed by it
    # The months summed the node had, by key, when they were asked with the area (the node is
    # not asked again); none when it was weighed for this report (no worker had shared it, so
    # none had shared its months summed under it); None: not asked yet.
    summed_asked: dict | None = field(default=None, compare=False)

    @functools.cached_property
    def ids(self) -> list[int]:
        return [cell for cell, _, _ in self.cells]

    @functools.cached_property
    def share_array(self) -> np.ndarray:
        """Each cell's share, by position in cells."""
        return np.array([share for _, _, share in self.cells], dtype=float)


# The areas weighed lately, per worker process: a repeated area is not weighed again.
AREAS = ByteLRU(8 * 2**20)
AREA_CELL_BYTES = 256  # a cell's tuple, code and share, and its entries in the cached arrays


@contextlib.contextmanager
def report_area(
    geometry: GEOSGeometry, *, summed_keys: Callable[[bytes], list[tuple]] | None = None
) -> Iterator[ReportArea]:
    """The area's cells (id, code, share), for all the passes of a report: a pass inside
    another's `with` reuses them. Kept in the worker for later reports too, keyed by the
    geometry and the catalogue's state (insights/catalogue.py), which a release's build changes;
    else shared by another worker (asked with its months summed, summed_keys(its digest): one
    round trip for both), else weighed."""
    ewkb = bytes(geometry.ewkb)
    made = getattr(connection, "report_area", None)
    if made and made[0] == ewkb:
        yield made[1]
        return
    state = catalogue().state
    held_key = (ewkb, state, MIN_SHARE)
    area = shared.remembered(AREAS, held_key)
    if area is None:
        digest = hashlib.blake2b(repr(held_key).encode(), digest_size=16).digest()
        asked, found, months = [], None, []
        # The node's record says whether any worker shared it: a new area asks Redis for nothing.
        mark = local_months.area_mark(state, digest)
        if local_months.area_may_be_shared(mark):
            asked = summed_keys(digest) if summed_keys else []
            found, months = shared.get_area(digest, summed=asked)
        if found is None:
            area = weighed(ewkb, state, digest)
            written = functools.partial(local_months.mark_area_shared, mark)
            shared.put_area(digest, np.array(area.ids, dtype=np.int64), area.share_array, written=written)
        else:
            ids, shares = found
            area = ReportArea(
                cells=list(zip(ids.tolist(), cell_codes(ids), shares.tolist(), strict=True)), digest=digest
            )
        AREAS.put(held_key, area, ITEM_OVERHEAD + len(ewkb) + AREA_CELL_BYTES * len(area.cells))
        if found is None:
            area = replace(area, summed_asked={})
        elif asked:
            months = {key: SummedMonth(*arrays) for key, arrays in zip(asked, months, strict=True) if arrays}
            area = replace(area, summed_asked=months)
    connection.report_area = (ewkb, area)
    try:
        yield area
    finally:
        connection.report_area = None


def weighed(ewkb: bytes, state: tuple, digest: bytes) -> ReportArea:
    """The area's (its EWKB's) cells with at least MIN_SHARE inside it, by code, weighed in the
    worker; the grid's cells in its span from the node's copy of the grid under the catalogue's
    state (insights/local_months.py), else from the database."""
    area = in_grid_crs(ewkb)
    area_span = span(area)
    cells = local_months.cells_in_span(state, area_span)
    if cells is None:
        cells = cells_in_span(*area_span)
    ids, codes, shares = cell_shares(area, cells, min_share=MIN_SHARE)
    return ReportArea(cells=list(zip(ids, codes, shares, strict=True)), digest=digest)
