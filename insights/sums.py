"""Reads of the released tables (insights/packing.py): area-weighted sums of the published
values per local time bucket and segment, decoded and summed with numpy."""

import contextlib
import datetime as dt
import functools
import itertools
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field, replace
from zoneinfo import ZoneInfo

import numpy as np
from django.conf import settings
from django.contrib.gis.geos import GEOSGeometry
from django.db import connection

from insights.buckets import buckets, is_boundary, local_midnight
from insights.catalogue import catalogue, forget
from insights.held import HELD, Month, Read, held_values, month_sums, segment_key
from insights.kinds import PRESENCE, TRIPS, AggregateKind
from insights.memo import ITEM_OVERHEAD, ByteLRU
from insights.packing import HOURS_PER_ROW
from insights.partitions import month_start, months, next_month
from insights.scans import Scan, scanned_months
from insights.selectors import CELL_SHARES_SQL, MIN_SHARE

# Reports read published values only: the release of each dataset version up to the report's,
# under one policy.
_RELEASED = "t.policy_id = %(policy)s AND t.dataset_version_id <= %(version)s"
# A read of at most this many packed rows (about 3 kB each at most) is a small one: its months
# are kept in the worker's memory (insights/held.py). A larger one is streamed (insights/scans.py).
ROWS_AT_ONCE = 10_000


def presence_source(*, granularity: str, time_zone: str) -> str:
    """'hour' or 'day': the table a report of this granularity and zone reads. The day rollup is
    kept per local day of ROLLUP_TIME_ZONE only; weeks and months are summed from its days."""
    if time_zone != settings.ROLLUP_TIME_ZONE or granularity == "hour":
        return "hour"
    return "day"


@dataclass(frozen=True)
class Released:
    """Published values summed: weighted by the share of each cell inside the area, and how
    many hourly values were published (count), weighted too (weight)."""

    value: float = 0.0
    weight: float = 0.0
    count: int = 0


@dataclass(frozen=True)
class Sums:
    """Published values summed per bucket and group (a tuple of segment codes), as arrays of
    shape (buckets, groups), and everyone's per cell over the period."""

    buckets: list[dt.datetime]  # each bucket's start
    groups: list[tuple]  # each group's segment codes
    value: np.ndarray
    weight: np.ndarray
    count: np.ndarray
    # (cell code, share inside the area) of every cell the area covers, by code
    cells: list[tuple[str, float]]
    # with_cells: everyone's published values per cell over the period (summed, and how many), as cells
    cell_value: np.ndarray | None = None
    cell_count: np.ndarray | None = None

    @property
    def by_bucket(self) -> dict[tuple, Released]:
        """{(bucket start, *segment codes): Released} where something was published, by bucket then group."""
        found = {}
        for bucket, group in zip(*np.nonzero(self.count), strict=True):
            found[(self.buckets[bucket], *self.groups[group])] = Released(
                float(self.value[bucket, group]), float(self.weight[bucket, group]), int(self.count[bucket, group])
            )
        return found

    def column(self, codes: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One group's value, weight and count per bucket (zeros: nothing published)."""
        if codes not in self.groups:
            zeros = np.zeros(len(self.buckets))
            return zeros, zeros, zeros
        group = self.groups.index(codes)
        return self.value[:, group], self.weight[:, group], self.count[:, group]


class _Totals:
    """Sums of packed values per (bucket, group), as arrays: a group is a segment-code tuple,
    a zone pair, or a cell."""

    def __init__(self, *, buckets: int, groups: int):
        self.buckets, self.groups = buckets, groups
        self.value, self.weight, self.count = (np.zeros(buckets * groups) for _ in range(3))

    def add_month(self, lookup: np.ndarray, month: Month, *, group: np.ndarray, share: np.ndarray) -> None:
        """A month's rows of values (insights/held.py), each row with its group (-1: not summed)
        and share; lookup: the bucket of each of the month's hours or days (-1: outside the
        period)."""
        summed = month_sums(month, lookup, group=group, share=share)
        if summed is None:
            return
        bucket, groups, parts = summed
        at = _block(bucket, groups)
        for total, part in zip((self.value, self.weight, self.count), parts, strict=True):
            total.reshape(self.buckets, self.groups)[at] += part.T

    def shaped(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """value, weight and count as (buckets, groups) arrays."""
        return tuple(part.reshape(self.buckets, self.groups) for part in (self.value, self.weight, self.count))


def _block(rows: np.ndarray, columns: np.ndarray) -> tuple:
    """The index of a block of the (buckets, groups) totals, from its increasing row and column
    positions: slices when each follows the one before (an hour's buckets, a report's groups),
    which add much faster than a fancy index."""
    if rows[-1] - rows[0] == len(rows) - 1 and columns[-1] - columns[0] == len(columns) - 1:
        return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(columns[0]), int(columns[-1]) + 1)
    return np.ix_(rows, columns)


def _position(keys: np.ndarray, found: np.ndarray) -> np.ndarray:
    """The position in keys of each found key; -1 where it is not one of them."""
    order = np.argsort(keys)
    at = np.minimum(np.searchsorted(keys, found, sorter=order), len(keys) - 1)
    return np.where(keys[order[at]] == found, order[at], -1)


@dataclass(frozen=True)
class _Period:
    """A report's period and buckets: which bucket each stored hour or local day falls in."""

    start: dt.datetime
    end: dt.datetime
    starts: tuple[dt.datetime, ...]  # each bucket's start
    zone: ZoneInfo
    _lookups: dict = field(default_factory=dict, compare=False)  # buckets_of_month's, by source and month

    @classmethod
    def of(cls, start, end, granularity: str, zone: ZoneInfo, *, over_period: bool) -> "_Period":
        return _period(start, end, granularity, zone, over_period)

    @functools.cached_property
    def _edges(self) -> np.ndarray:
        return np.array([bucket_start.timestamp() for bucket_start in self.starts])

    def bucket_of(self, instants: np.ndarray) -> np.ndarray:
        """The bucket of each instant (epoch seconds); -1 outside [start, end)."""
        found = np.searchsorted(self._edges, instants, side="right") - 1
        found[(instants < self.start.timestamp()) | (instants >= self.end.timestamp())] = -1
        return found

    def buckets_of_month(self, source: str, month: dt.datetime | dt.date) -> np.ndarray:
        """The bucket of each hour of a packed UTC month (its first instant), or of each day of a
        packed local month (its first day), by the day's local midnight. Not to be changed: kept."""
        found = self._lookups.get((source, month))
        if found is None:
            if source == "hour":
                found = self.bucket_of(month.timestamp() + 3600.0 * np.arange(HOURS_PER_ROW))
            else:
                days = [month + dt.timedelta(days=offset) for offset in range(31)]
                found = self.bucket_of(np.array([local_midnight(day, self.zone).timestamp() for day in days]))
            found.flags.writeable = False
            self._lookups[(source, month)] = found
        return found

    def months(self, source: str) -> list[dt.datetime | dt.date]:
        """The packed months the period touches, as stored: UTC months' first instants, or the
        first days of local months for the day rollup."""
        if source == "hour":
            return [month_start(month) for month in months(self.start, self.end)]
        first = self.start.astimezone(self.zone).date().replace(day=1)
        last = (self.end - dt.timedelta(microseconds=1)).astimezone(self.zone).date().replace(day=1)
        found = [first]
        while found[-1] < last:
            found.append(next_month(found[-1]))
        return found


@functools.lru_cache(maxsize=8)  # a worker's recent periods: a year of hours is some hundred kB
def _period(start, end, granularity: str, zone: ZoneInfo, over_period: bool) -> _Period:
    if over_period:
        return _Period(start=start, end=end, starts=(start,), zone=zone)
    starts = tuple(bucket_start for bucket_start, _ in buckets(start, end, granularity, zone))
    return _Period(start=start, end=end, starts=starts, zone=zone)


def period_starts(start: dt.datetime, end: dt.datetime, granularity: str, zone: ZoneInfo) -> tuple[dt.datetime, ...]:
    """The start of each of the period's buckets, as the sums are keyed."""
    return _period(start, end, granularity, zone, False).starts


def cell_hour_sums(
    *,
    kind: AggregateKind,
    geometry: GEOSGeometry,
    start: dt.datetime,
    end: dt.datetime,
    granularity: str,
    time_zone: str,
    version: int,
    policy: int,
    breakdowns: Collection[str] = (),
    with_everyone: bool = False,
    with_cells: bool = False,
    over_period: bool = False,
    source: str | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> Sums:
    """Area-weighted sums of the kind's published values (the release of each dataset version
    up to `version` under policy `policy`) per local time bucket and segment (a segment
    column not broken down is 0, all) and, with_cells, everyone's per cell over the whole
    period. with_everyone: everyone's sums per bucket too (segment codes all 0), from the same
    read as the breakdowns'. over_period: one bucket, the whole period, keyed by its start.

    The area's cells are weighed once; the packed rows (insights/packing.py) are then decoded
    and summed with numpy. A small read's months come from the worker's memory
    (insights/held.py; what is not held is read in one statement); a large one's are read a
    month at a time, reporting the fraction done after each month.
    """
    if source is None:
        # Summed over the whole period, hours and days give the same sums when it is whole local days.
        whole_days = over_period and all(
            is_boundary(instant, "day", ZoneInfo(settings.ROLLUP_TIME_ZONE)) for instant in (start, end)
        )
        source = "day" if whole_days else presence_source(granularity=granularity, time_zone=time_zone)
    everyone = (0,) * len(kind.segments)
    labels = kind.labels() if breakdowns else {}
    codes = [range(1, len(labels[name])) if name in breakdowns else [0] for name in kind.segments]
    group_keys = ([everyone] if with_everyone or not breakdowns else []) + (
        list(itertools.product(*codes)) if breakdowns else []
    )
    groups = {key: index for index, key in enumerate(group_keys)}
    everyone_only = " AND ".join(f"t.{name} = 0" for name in kind.segments)
    segments = " AND ".join(f"t.{name} {'>' if name in breakdowns else '='} 0" for name in kind.segments)
    if breakdowns and with_everyone:
        segments = f"(({everyone_only}) OR ({segments}))"
    period = _Period.of(start, end, granularity, ZoneInfo(time_zone), over_period=over_period)
    with report_area(geometry) as area:
        totals = _Totals(buckets=len(period.starts), groups=len(groups))
        cells = _Totals(buckets=1, groups=len(area.cells))  # everyone's per cell over the period
        if len(area.ids) * len(groups) * len(period.months(source)) <= ROWS_AT_ONCE:
            # A small read: its months are kept in the worker's memory (insights/held.py).
            table = f"{kind.table}_released{'' if source == 'hour' else '_day'}"
            by_month = _held_values(
                Read(
                    table=table,
                    source=source,
                    place="cell_id",
                    segments=tuple(kind.segments),
                    where=segments,
                    params={},
                    filter_key=(segments,),
                    policy=policy,
                    retained_from=None,  # the catalogue's, set by _held_values
                ),
                kind=kind,
                period=period,
                places=area.ids,
                version=version,
            )
            by_key = {segment_key(codes): index for codes, index in groups.items()}
            for month, held in by_month:
                group = np.array([by_key.get(int(key), -1) for key in held.segment], dtype=np.int64)
                share = area.share_array[held.place]
                lookup = period.buckets_of_month(source, month)
                totals.add_month(lookup, held, group=group, share=share)
                if with_cells:
                    cells.add_month(
                        np.where(lookup >= 0, 0, -1),
                        held,
                        group=np.where(held.segment == 0, held.place, -1),
                        share=share,
                    )
            if on_progress:
                on_progress(1.0)
        else:
            # A large read: streamed a month at a time (insights/scans.py), summed as the kept months are.
            keys = np.array([segment_key(codes) for codes in group_keys], dtype=np.int64)
            for month, rows in scanned_months(
                Scan(
                    table=f"{kind.table}_released{'' if source == 'hour' else '_day'}",
                    source=source,
                    place="cell_id",
                    segments=tuple(kind.segments),
                    where=f"{segments} AND {_RELEASED}",
                    params={"version": version, "policy": policy},
                ),
                places=area.ids,
                months=period.months(source),
                rows_per_month=len(area.ids) * len(groups),
                on_progress=on_progress,
            ):
                share = area.share_array[rows.place]
                lookup = period.buckets_of_month(source, month)
                totals.add_month(lookup, rows, group=_position(keys, rows.segment), share=share)
                if with_cells:
                    cells.add_month(
                        np.where(lookup >= 0, 0, -1),
                        rows,
                        group=np.where(rows.segment == 0, rows.place, -1),
                        share=share,
                    )
    value, weight, count = totals.shaped()
    return Sums(
        buckets=list(period.starts),
        groups=group_keys,
        value=value,
        weight=weight,
        count=count,
        cells=[(code, share) for _, code, share in area.cells],
        cell_value=cells.value if with_cells else None,
        cell_count=cells.count if with_cells else None,
    )


def _held_values(
    read: Read, *, kind: AggregateKind, period: _Period, places: list[int], version: int
) -> list[tuple[dt.datetime | dt.date, Month]]:
    """A small read's values by month, from the worker's memory (insights/held.py): each month's
    dataset versions up to `version` as the catalogue lists them."""
    seen = catalogue()
    read = replace(read, retained_from=seen.retained_from.get(kind.name))
    months_read = period.months(read.source)
    versions = [
        seen.versions(
            kind=kind.name,
            policy=read.policy,
            version=version,
            start=month_start(month),
            end=month_start(next_month(month)),
        )
        for month in months_read
    ]
    return list(zip(months_read, held_values(read, places=places, months=months_read, versions=versions), strict=True))


def trip_sums(
    *,
    zones: Collection[int],
    start: dt.datetime,
    end: dt.datetime,
    granularity: str,
    time_zone: str,
    version: int,
    policy: int,
    on_progress: Callable[[float], None] | None = None,
) -> Sums:
    """Published trips between the zones (region ids) per local time bucket and zone pair
    (groups: (origin, destination), by origin then destination): the trips, and how many
    zone-pair-hours were published (weight and count)."""
    source = presence_source(granularity=granularity, time_zone=time_zone)
    period = _Period.of(start, end, granularity, ZoneInfo(time_zone), over_period=False)
    ordered = np.array(sorted(zones), dtype=np.int64)
    pairs = [(int(origin), int(destination)) for origin in ordered for destination in ordered]
    totals = _Totals(buckets=len(period.starts), groups=len(pairs))
    if len(zones) ** 2 * len(period.months(source)) <= ROWS_AT_ONCE:
        # A small read: its months are kept in the worker's memory (insights/held.py).
        table = f"{TRIPS.table}_released{'' if source == 'hour' else '_day'}"
        where = "t.destination = ANY(%(zones)s::smallint[])"
        by_month = _held_values(
            Read(
                table=table,
                source=source,
                place="origin_id",
                segments=("destination",),
                where=where,
                params={"zones": [int(zone) for zone in ordered]},
                filter_key=(where, tuple(ordered)),
                policy=policy,
                retained_from=None,  # the catalogue's, set by _held_values
            ),
            kind=TRIPS,
            period=period,
            places=list(ordered),
            version=version,
        )
        for month, held in by_month:
            # pairs run by origin then destination, both in id order
            pair = held.place * len(ordered) + np.searchsorted(ordered, held.segment)
            totals.add_month(period.buckets_of_month(source, month), held, group=pair, share=np.ones(len(pair)))
        if on_progress:
            on_progress(1.0)
        value, _, count = totals.shaped()
        return Sums(buckets=list(period.starts), groups=pairs, value=value, weight=count, count=count, cells=[])
    # A large read: streamed (insights/scans.py), a year of a few zones' pairs in one statement.
    for month, rows in scanned_months(
        Scan(
            table=f"{TRIPS.table}_released{'' if source == 'hour' else '_day'}",
            source=source,
            place="origin_id",
            segments=("destination",),
            where=f"t.destination = ANY(%(zones)s::smallint[]) AND {_RELEASED}",
            params={"zones": [int(zone) for zone in ordered], "version": version, "policy": policy},
        ),
        places=list(ordered),
        months=period.months(source),
        rows_per_month=len(zones) ** 2,
        on_progress=on_progress,
    ):
        # pairs run by origin then destination, both in id order
        pair = rows.place * len(ordered) + np.searchsorted(ordered, rows.segment)
        totals.add_month(period.buckets_of_month(source, month), rows, group=pair, share=np.ones(len(pair)))
    value, _, count = totals.shaped()
    return Sums(buckets=list(period.starts), groups=pairs, value=value, weight=count, count=count, cells=[])


def cell_hour_totals(**query) -> dict[tuple, Released]:
    """The per-bucket sums of cell_hour_sums, keyed by (bucket start, *segment codes)."""
    return cell_hour_sums(**query).by_bucket


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


@contextlib.contextmanager
def report_area(geometry: GEOSGeometry) -> Iterator[ReportArea]:
    """The area's cells (id, code, share), weighed once for all the passes of a report: a pass
    inside another's `with` reuses them. They are kept for later reports too, keyed by the
    geometry and the catalogue's state (insights/catalogue.py): the grid gains cells only in a
    release's build, which changes that state."""
    key = bytes(geometry.ewkb)
    made = getattr(connection, "report_area", None)
    if made and made[0] == key:
        yield made[1]
        return
    held_key = (key, catalogue().state)
    area = AREAS.get(held_key)
    if area is None:
        with connection.cursor() as cursor:
            cursor.execute(
                f"WITH {CELL_SHARES_SQL} SELECT cell_id, code, share FROM covered ORDER BY code",
                {"geometry": key, "min_share": MIN_SHARE},
            )
            area = ReportArea(cells=cursor.fetchall())
        AREAS.put(held_key, area, ITEM_OVERHEAD + len(key) + AREA_CELL_BYTES * len(area.cells))
    connection.report_area = (key, area)
    try:
        yield area
    finally:
        connection.report_area = None


def caches_clear() -> None:
    """Forget what this process keeps between reports: the weighed areas, the decoded months
    and the catalogue of releases. The next report reads them all again (a cold report)."""
    AREAS.clear()
    HELD.clear()
    forget()


presence_totals = functools.partial(cell_hour_totals, kind=PRESENCE)
