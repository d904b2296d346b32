"""Reads of the released tables (insights/packing.py): area-weighted sums of the published
values per local time bucket and segment, decoded and summed with numpy."""

import datetime as dt
import functools
import hashlib
import itertools
from collections.abc import Callable, Collection, Hashable
from dataclasses import dataclass, replace
from zoneinfo import ZoneInfo

import numpy as np
from django.conf import settings
from django.contrib.gis.geos import GEOSGeometry

from insights import local_months, shared
from insights.areas import AREAS, report_area
from insights.buckets import is_boundary
from insights.catalogue import catalogue, forget
from insights.held import HELD, Month, Read, held_values, read_months, segment_key
from insights.kinds import PRESENCE, TRIPS, AggregateKind
from insights.partitions import month_start, next_month
from insights.periods import MonthSpan, Period
from insights.regions import forget as regions_forget
from insights.scans import Scan, scanned_months
from insights.summed import SUMMED, Grouping, SummedMonth, keep, kept, summed_copy, summed_month

# Reports read published values only: the release of each dataset version up to the report's,
# under one policy.
_RELEASED = "t.policy_id = %(policy)s AND t.dataset_version_id <= %(version)s"
# A read of at most this many packed rows of hours (about 3 kB each at most), or four times as
# many of the day rollup (a tenth of that), is a small one: its months are kept in the worker's
# memory (insights/summed.py). A larger one is streamed (insights/scans.py).
ROWS_AT_ONCE = 10_000
DAY_ROWS_PER_HOUR_ROW = 4
# A small read of at most this many place-months not summed for the area yet keeps them place by
# place (insights/held.py), for other areas that share its cells; a larger one reads them and
# keeps only its months summed (insights/summed.py).
HELD_PLACE_MONTHS = 100
# An od-matrix of at most this many zone-months is summed from the node's copy rather than asked
# of Redis (the service's first report of it finds nothing there): summed where its rows lie
# (insights/summed.py), at L a worker's first report of 4 zones over 13 months took 1.1-1.4 ms
# that way against 1.7-2.7 ms asking, of 36 zones over 13 months 20-26 ms against 14-18 ms.
COPY_FIRST_PLACE_MONTHS = 100


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

    def add_summed(self, span: MonthSpan | None, summed: SummedMonth) -> None:
        """A month summed per group (insights/summed.py), its span of hours (or days) added into
        the buckets they fall in."""
        if span is None or not len(summed.groups):
            return
        parts = (summed.value[:, span.columns], summed.weight[:, span.columns], summed.count[:, span.columns])
        if span.runs is not None:  # buckets of several hours (or days)
            parts = tuple(np.add.reduceat(part, span.runs, axis=1) for part in parts)
        at = _block(span.buckets, summed.groups)
        for total, part in zip((self.value, self.weight, self.count), parts, strict=True):
            total.reshape(self.buckets, self.groups)[at] += part.T

    def add_places(self, span: MonthSpan | None, summed: SummedMonth, *, share: np.ndarray) -> None:
        """Everyone's values of each place over a month's span, as one bucket per place (a
        group per place), weighted by the places' shares."""
        if span is None:
            return
        value = summed.place_value[:, span.columns].sum(axis=1, dtype=np.int64).astype(float)
        count = summed.place_count[:, span.columns].sum(axis=1, dtype=np.int64).astype(float)
        self.value += value * share
        self.weight += count * share
        self.count += count

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


def one_read_of_both(
    first: tuple[dt.datetime, dt.datetime], second: tuple[dt.datetime, dt.datetime], *, granularity: str, time_zone: str
) -> bool:
    """Whether two periods, the first ending before the second starts, are read at once
    (cell_hour_sums' gap): when that reads no packed month neither of them touches."""
    if first[1] > second[0] or not is_boundary(second[0], granularity, ZoneInfo(time_zone)):
        return False
    zone = ZoneInfo(time_zone)
    source = presence_source(granularity=granularity, time_zone=time_zone)
    both = Period.of(first[0], second[1], granularity, zone, over_period=True).months(source)
    apart = {
        month
        for part in (first, second)
        for month in Period.of(*part, granularity, zone, over_period=True).months(source)
    }
    return set(both) == apart


def split_sums(sums: Sums, *, first: int, gap: bool) -> tuple[Sums, Sums]:
    """Sums read over two periods at once (cell_hour_sums' gap) as each period's: the first
    `first` buckets, and those after the gap's bucket if there is one."""
    first_part, second_part = (
        replace(sums, buckets=sums.buckets[at], value=sums.value[at], weight=sums.weight[at], count=sums.count[at])
        for at in (slice(None, first), slice(first + gap, None))
    )
    return first_part, second_part


def is_small_read(*, places: int, start: dt.datetime, end: dt.datetime, time_zone: str, groups: int = 1) -> bool:
    """Whether a read of the places' hourly rows over the period, of so many groups, is small:
    its months kept in the worker's memory (insights/held.py), rather than streamed."""
    period = Period.of(start, end, "hour", ZoneInfo(time_zone), over_period=True)
    return places * groups * len(period.months("hour")) <= ROWS_AT_ONCE


def _small(rows: int, source: str) -> bool:
    """Whether a read of so many packed rows of the source is a small one."""
    return rows <= ROWS_AT_ONCE * (DAY_ROWS_PER_HOUR_ROW if source == "day" else 1)


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
    gap: tuple[dt.datetime, dt.datetime] | None = None,
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
    period = Period.of(start, end, granularity, ZoneInfo(time_zone), over_period=over_period, gap=gap)
    table = f"{kind.table}_released{'' if source == 'hour' else '_day'}"
    by_key = {segment_key(codes): index for codes, index in groups.items()}
    read = Read(
        table=table,
        source=source,
        place="cell_id",
        segments=tuple(kind.segments),
        where=segments,
        params={},
        filter_key=(segments,),
        policy=policy,
        retained_from=None,  # the catalogue's, set by _summed_keys
    )
    grouping = (tuple(sorted(by_key.items())), Grouping.of(by_key))

    @functools.cache  # once a report: for the node's keys, asked with the area, and the worker's
    def keyed() -> _Keyed:
        return _summed_keys(read, kind, period, version, grouping[0], with_cells)

    def summed_keys(area_digest: bytes) -> list[tuple]:
        """The area's months summed as a small read keys them at the node: asked with the area
        (a read that turns out large finds none, in the same round trip)."""
        return keyed().keys(area_digest)

    with report_area(geometry, summed_keys=summed_keys) as area:
        totals = _Totals(buckets=len(period.starts), groups=len(groups))
        cells = _Totals(buckets=1, groups=len(area.cells))  # everyone's per cell over the period
        # Two periods read at once are as small as the larger of them: kept as each would be apart.
        parts = [(start, end)] if gap is None else [(start, gap[0]), (gap[1], end)]
        months_read = max(
            len(Period.of(*part, granularity, period.zone, over_period=True).months(source)) for part in parts
        )
        if _small(len(area.ids) * len(groups) * months_read, source):
            # A small read: its months are kept in the worker's memory (insights/held.py), and
            # summed per group for this area (insights/summed.py).
            for month, summed in _summed_months(
                read,
                kind=kind,
                period=period,
                places=area.ids,
                shares=area.share_array,
                shared_owner=area.digest,
                version=version,
                grouping=grouping,
                with_places=with_cells,
                asked=area.summed_asked,
                keyed=keyed(),
            ):
                totals.add_summed(period.month_span(source, month), summed)
                if with_cells:
                    cells.add_places(period.month_span(source, month), summed, share=area.share_array)
            if on_progress:
                on_progress(1.0)
        else:
            # A large read: streamed (insights/scans.py), each batch of a month summed as a kept month is.
            for month, rows in scanned_months(
                Scan(
                    table=table,
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
                span = period.month_span(source, month)
                summed = summed_month(rows, group=grouping[1].of_rows(rows), share=share, places=None)
                totals.add_summed(span, summed)
                if with_cells:
                    _add_places(cells, span, rows, share=share)
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


@dataclass(frozen=True)
class _Keyed:
    """What a small read's months summed for an area are keyed by (insights/summed.py): the read
    with the kind's retention mark, its months, each one's dataset versions up to the report's as
    the catalogue lists them, and the grouping's key and whether places are summed."""

    read: Read
    months: list
    versions: list
    rest: tuple

    def keys(self, owner: bytes) -> list[tuple]:
        """The months' keys for an area (owner: a digest of what it is)."""
        area = (self.read.table, self.read.filter_key, self.read.policy, self.read.retained_from, owner)
        return [
            (*area, month, versions, *self.rest) for month, versions in zip(self.months, self.versions, strict=True)
        ]


def _summed_keys(
    read: Read, kind: AggregateKind, period: Period, version: int, grouping: Hashable, with_places: bool
) -> _Keyed:
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
    return _Keyed(read=read, months=months_read, versions=versions, rest=(grouping, with_places))


def _summed_months(
    read: Read,
    *,
    kind: AggregateKind,
    period: Period,
    places: list[int],
    shares: np.ndarray,
    version: int,
    grouping: tuple[Hashable, Grouping],
    with_places: bool,
    shared_owner: bytes | None = None,
    asked: dict | None = None,
    copy_first: bool = False,
    keyed: _Keyed | None = None,
) -> list[tuple[dt.datetime | dt.date, SummedMonth]]:
    """A small read's months summed per group for this area: from the worker's memory
    (insights/summed.py), else summed where they lie in the node's copy (insights/local_months.py),
    else from the months kept per place (insights/held.py), else read. grouping: what says which
    segments go to which group (for the key), and the grouping itself. This worker keeps them
    keyed by a digest of the places and their shares, which a release that adds no cell under the
    area leaves as they are; the node by shared_owner if given (a digest of the area's key,
    insights.areas.ReportArea.digest: known before its cells, so they are asked with the area),
    else as this worker. asked: the months summed the node had when asked with the area
    (ReportArea.summed_asked); None: ask it now. copy_first: when the node's copy holds every
    month, sum them here rather than ask the node, nor share them: for few places, cheaper than
    the round trip. keyed: the read's keys, if made already (_summed_keys)."""
    keyed = keyed or _summed_keys(read, kind, period, version, grouping[0], with_places)
    read, months_read, versions = keyed.read, keyed.months, keyed.versions
    places_digest = hashlib.blake2b(np.asarray(places, dtype=np.int64).tobytes() + shares.tobytes(), digest_size=16)
    keys = keyed.keys(places_digest.digest())
    shared_keys = keys if shared_owner is None else keyed.keys(shared_owner)

    @functools.cache  # asked whether every month has one, then for those missing here
    def copy_of(index: int) -> local_months.Copy | None:
        return local_months.opened(read.table, read.policy, read.retained_from, months_read[index], versions[index])

    copied = copy_first and all(not versions[index] or copy_of(index) for index in range(len(months_read)))
    found = kept(keys, shared_keys, asked={} if copied else asked)
    missing = [index for index, summed in enumerate(found) if summed is None]
    if missing:
        # The months the node has a copy of are summed where they lie (insights/summed.py).
        copies = {index: copy for index in missing if (copy := copy_of(index)) is not None}
        place_ids = np.asarray(places, dtype=np.int64)
        for index, copy in copies.items():
            found[index] = summed_copy(
                copy, places=place_ids, shares=shares, grouping=grouping[1], with_places=with_places
            )
        unread = [index for index in missing if index not in copies]
        # Many place-months are read at once instead: making and keeping an entry per place-month
        # (held_values) costs more than reading its row.
        read_missing = held_values if len(places) * len(unread) <= HELD_PLACE_MONTHS else read_months
        months = (
            read_missing(
                read,
                places=places,
                months=[months_read[index] for index in unread],
                versions=[versions[index] for index in unread],
            )
            if unread
            else []
        )
        for index, month in zip(unread, months, strict=True):
            found[index] = summed_month(
                month,
                group=grouping[1].of_rows(month),
                share=shares[month.place],
                places=len(places) if with_places else None,
            )
        keep([(keys[index], shared_keys[index], found[index]) for index in missing], share=not copied)
    return list(zip(months_read, found, strict=True))


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
    period = Period.of(start, end, granularity, ZoneInfo(time_zone), over_period=False)
    ordered = np.array(sorted(zones), dtype=np.int64)
    pairs = [(int(origin), int(destination)) for origin in ordered for destination in ordered]
    totals = _Totals(buckets=len(period.starts), groups=len(pairs))
    if _small(len(zones) ** 2 * len(period.months(source)), source):
        # A small read: its months are kept in the worker's memory (insights/held.py), and
        # summed per zone pair (insights/summed.py).
        where = "t.destination = ANY(%(zones)s::smallint[])"
        for month, summed in _summed_months(
            Read(
                table=f"{TRIPS.table}_released{'' if source == 'hour' else '_day'}",
                source=source,
                place="origin_id",
                segments=("destination",),
                where=where,
                params={"zones": [int(zone) for zone in ordered]},
                filter_key=(where, tuple(ordered)),
                policy=policy,
                retained_from=None,  # the catalogue's, set by _summed_keys
            ),
            kind=TRIPS,
            period=period,
            places=list(ordered),
            shares=np.ones(len(ordered)),
            version=version,
            # pairs run by origin then destination, both in id order
            grouping=((), Grouping.of({int(zone): at for at, zone in enumerate(ordered)}, stride=len(ordered))),
            with_places=False,
            copy_first=len(ordered) * len(period.months(source)) <= COPY_FIRST_PLACE_MONTHS,
        ):
            totals.add_summed(period.month_span(source, month), summed)
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
        totals.add_summed(
            period.month_span(source, month), summed_month(rows, group=pair, share=np.ones(len(pair)), places=None)
        )
    value, _, count = totals.shaped()
    return Sums(buckets=list(period.starts), groups=pairs, value=value, weight=count, count=count, cells=[])


def _add_places(cells: _Totals, span: MonthSpan | None, rows: Month, *, share: np.ndarray) -> None:
    """Everyone's values of the rows' places over a month's span, weighted by the rows' shares:
    a batch of a large read, which holds some of the area's places (a group per place)."""
    if span is None:
        return
    everyone = rows.segment == 0
    place, share = rows.place[everyone], share[everyone]
    value = rows.values[everyone, span.columns].sum(axis=1, dtype=np.int64).astype(float)
    count = rows.counts[everyone, span.columns].sum(axis=1, dtype=np.int64).astype(float)
    for total, weights in ((cells.value, value * share), (cells.weight, count * share), (cells.count, count)):
        total += np.bincount(place, weights=weights, minlength=len(total))


def cell_hour_totals(**query) -> dict[tuple, Released]:
    """The per-bucket sums of cell_hour_sums, keyed by (bucket start, *segment codes)."""
    return cell_hour_sums(**query).by_bucket


def caches_clear(*, releases: bool = True) -> None:
    """Forget what this process keeps between reports: the weighed areas, the decoded months and,
    with releases, the catalogue of releases and the regions, as a release's build makes every
    worker read them again. The next report reads them all again (a cold report: its area and
    its months from the node's shared months, insights/shared.py, or weighed and read from
    PostgreSQL), once this process's writes to the node's shared months are done."""
    shared.flush()
    AREAS.clear()
    HELD.clear()
    SUMMED.clear()
    if releases:
        forget()
        regions_forget()


presence_totals = functools.partial(cell_hour_totals, kind=PRESENCE)
