"""The report engine: turns an order into its result document.

Every number of a result is computed from published values only (insights.releases): sums of
them, weighted by the share of each cell inside the area, and what follows from those sums
(shares, changes). Nothing here reads a withheld value, so no result, and no set of results,
tells more than the release it was computed from.
"""

import datetime as dt
import functools
import gc
import itertools
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
from django.contrib.gis.geos import GEOSGeometry

from insights.areas import report_area
from insights.buckets import HOUR, bucket_next
from insights.catalogue import one_look
from insights.kinds import DWELL, HOME, PRESENCE, TRIPS, AggregateKind, Metric
from insights.models import ReleasePolicy
from insights.periods import period_starts
from insights.rows import Rows, label_array, labelled, rounded, whole_or_null
from insights.selectors import dataset_sources, region_names_by_id
from insights.stamps import Stamps, bucket_stamps
from insights.sums import (
    Released,
    Sums,
    cell_hour_sums,
    is_small_read,
    trip_sums,
)

NOT_RELEASED = "not_released"  # none of the values the number sums was published

# What each product's number counts, and the name it had before (kept for one release).
# Presence summed over a bucket's hours counts person-hours, not visits; dwell counts arrivals.
FOOTFALL_METRIC = Metric("person_hours", deprecated="visits")  # footfall and compare
DWELL_METRIC = Metric("visits", deprecated="visitors")
CATCHMENT_METRIC = Metric("person_hours", deprecated="visitors")
TRIPS_METRIC = Metric("trips")


def one_report(compute: Callable[..., dict]) -> Callable[..., dict]:
    """Compute a report with one look at the releases (insights/catalogue.py: every pass reads
    one state of them) and the cyclic garbage collector paused. A result is tens of thousands
    of small rows that all live until it is stored; the collector would walk them again and
    again and find no cycle. Reference counting still frees what the report lets go."""

    @functools.wraps(compute)
    def paused(*args, **kwargs) -> dict:
        with one_look():
            if not gc.isenabled():  # already paused by the caller
                return compute(*args, **kwargs)
            gc.disable()
            try:
                return compute(*args, **kwargs)
            finally:
                gc.enable()

    return paused


@dataclass(frozen=True, kw_only=True)
class Query:
    """What a report asks: where, when, in which buckets and from which release, and what its
    product needs besides (breakdowns, regions, a comparison). Every engine function takes one."""

    geometry: GEOSGeometry | None = None  # the area; an od-matrix reads its zones instead
    start: dt.datetime
    end: dt.datetime
    granularity: str
    time_zone: str
    version: int
    policy: ReleasePolicy
    breakdowns: tuple[str, ...] = ()
    # {region id: (code, name)}: a catchment's home regions to list (None: every one with
    # published values), or an od-matrix's zones in the order of its rows and columns.
    regions: Mapping[int, tuple[str, str]] | None = None
    comparison_start: dt.datetime | None = None  # a compare order's other period, or
    comparison_end: dt.datetime | None = None
    comparison_geometry: GEOSGeometry | None = None  # its other area

    @property
    def hours(self) -> int:
        return _elapsed_hours(self.start, self.end)


@one_report
def footfall_result(
    query: Query,
    *,
    with_cells: bool = True,
    on_progress: Callable[[float], None] | None = None,
    sums: Sums | None = None,
    beside: Mapping[str, pa.Array] | None = None,
) -> dict:
    """People present per local bucket, as person-hours (the sum over the bucket's hours of the
    people present in each) and their average per hour, per segment of the requested
    breakdowns, and per cell over the whole period. sums: the query's, already read; beside:
    columns set beside the series' own, row for row (a compare's comparison)."""
    return _cell_hour_result(
        query,
        kind=PRESENCE,
        product="footfall",
        metric=FOOTFALL_METRIC,
        breakdowns=query.breakdowns,
        with_cells=with_cells,
        on_progress=on_progress,
        sums=sums,
        average_present=True,
        beside=beside,
    )


@one_report
def dwell_result(query: Query, *, on_progress: Callable[[float], None] | None = None) -> dict:
    """Visits (arrivals) per local bucket, in all and per dwell band (how long they stayed)."""
    return _cell_hour_result(
        query,
        kind=DWELL,
        product="dwell",
        metric=DWELL_METRIC,
        breakdowns=("dwell_band",),
        with_cells=True,
        on_progress=on_progress,
    )


def _cell_hour_result(
    query: Query,
    *,
    kind: AggregateKind,
    product: str,
    metric: Metric,
    breakdowns: Collection[str],
    with_cells: bool,
    on_progress: Callable[[float], None] | None,
    sums: Sums | None = None,
    average_present: bool = False,
    beside: Mapping[str, pa.Array] | None = None,
) -> dict:
    """average_present: the rows give each bucket's people present on average too; beside:
    columns set beside the series' own."""
    # Everyone's sums and the breakdowns' in one scan.
    if sums is None:
        sums = cell_hour_sums(
            **read_of(query, kind),
            breakdowns=breakdowns,
            with_everyone=True,
            with_cells=with_cells,
            on_progress=on_progress,
        )
    stamps = query_stamps(query)
    labels = kind.labels()
    coverage = sum(share for _, share in sums.cells)  # the area in cells: what a bucket's hours are weighed by
    everyone = (0,) * len(kind.segments)
    rows = functools.partial(
        _rows, kind, labels, sums, stamps, metric=metric, coverage=coverage, average_present=average_present
    )
    result = {
        **_head(query, product=product, metric=metric, kind=kind),
        "breakdowns": list(breakdowns),
        "series": rows(segments=[everyone], beside=beside),
    }
    counted = Counted(cell_hours=len(sums.cells) * query.hours, coverage=coverage * query.hours)
    counted.add_everyone(sums, everyone)
    if breakdowns:
        codes = [range(1, len(labels[name])) if name in breakdowns else [0] for name in kind.segments]
        segments = list(itertools.product(*codes))
        result["segments"] = rows(segments=segments)
        counted.add_breakdowns(sums, segments)
    if with_cells:
        result["cells"] = Rows(_cell_table(sums, metric))
    result["privacy"] = counted.summary(query.policy, result)
    return result


def read_of(query: Query, kind: AggregateKind) -> dict:
    return {
        "kind": kind,
        "geometry": query.geometry,
        "start": query.start,
        "end": query.end,
        "granularity": query.granularity,
        "time_zone": query.time_zone,
        "version": query.version,
        "policy": query.policy.pk,
    }


def _head(query: Query, *, product: str, metric: Metric, kind: AggregateKind) -> dict:
    tz = ZoneInfo(query.time_zone)
    return {
        "product": product,
        "metric": metric.name,
        "granularity": query.granularity,
        "time_zone": query.time_zone,
        "start": query.start.astimezone(tz).isoformat(),
        "end": query.end.astimezone(tz).isoformat(),
        "dataset_version": query.version,
        "sources": dataset_sources(
            kind=kind, start=query.start, end=query.end, version=query.version, policy=query.policy
        ),
    }


def _value(metric: Metric, published: Released) -> dict:
    """A number and its old name: the published values' sum, or None when none was published."""
    value = round(published.value) if published.count else None
    return {metric.name: value, **({metric.deprecated: value} if metric.deprecated else {})}


@dataclass
class Counted:
    """How much of what a report covers was published: the accuracy a result states."""

    cell_hours: int  # the area's cells times the period's hours
    coverage: float  # the same, each cell weighed by its share inside the area
    cell_hours_released: int = 0
    released_weight: float = 0.0
    breakdown_values: int = 0
    breakdown_values_released: int = 0

    def add_everyone(self, sums: Sums, everyone: tuple) -> None:
        _, weights, counts = sums.column(everyone)
        self.cell_hours_released += int(counts.sum())
        self.released_weight += float(weights.sum())

    def add_breakdowns(self, sums: Sums, segments: list[tuple]) -> None:
        self.breakdown_values += self.cell_hours * len(segments)
        self.breakdown_values_released += sum(int(sums.column(codes)[2].sum()) for codes in segments)

    def summary(self, policy: ReleasePolicy, result: dict) -> dict:
        return {
            **policy.summary(),
            "cell_hours": self.cell_hours,
            "cell_hours_released": self.cell_hours_released,
            "released_share": round(self.released_weight / self.coverage, 4) if self.coverage else None,
            "breakdown_values": self.breakdown_values,
            "breakdown_values_released": self.breakdown_values_released,
            "suppressed_values": suppressed_count(result),
        }


def suppressed_count(result: dict) -> int:
    """The result's numbers left empty because nothing they sum was published."""
    metric = result["metric"]
    return sum(part.table.column(metric).null_count for part in result.values() if isinstance(part, Rows))


def _elapsed_hours(start: dt.datetime, end: dt.datetime) -> int:
    # In UTC: two times of one zone subtract as wall-clock times, 24 hours across a 23-hour day.
    return int((end.astimezone(dt.UTC) - start.astimezone(dt.UTC)) / HOUR)


def part_of(on_progress, *, first: int, of: int) -> Callable[[float], None] | None:
    """Report pass number `first` (from 0) of `of` passes as its share of the whole."""
    if on_progress is None:
        return None
    return lambda done: on_progress((first + done) / of)


def query_stamps(query: Query) -> Stamps:
    """The buckets the sums were read in (insights.periods.period_starts), as the rows show them."""
    return _period_stamps(query.start, query.end, query.granularity, query.time_zone)


@functools.lru_cache(maxsize=8)  # a worker's recent periods, as insights/sums.py keeps their buckets
def _period_stamps(start: dt.datetime, end: dt.datetime, granularity: str, time_zone: str) -> Stamps:
    tz = ZoneInfo(time_zone)
    starts = period_starts(start, end, granularity, tz)
    return bucket_stamps(list(starts), bucket_next(starts[-1], granularity, tz), tz)


def _rows(
    kind: AggregateKind,
    labels_by_code: dict[str, tuple],
    sums: Sums,
    stamps: Stamps,
    *,
    metric: Metric,
    coverage: float,
    segments: list[tuple],
    average_present: bool = False,
    beside: Mapping[str, pa.Array] | None = None,
) -> Rows:
    """One row per bucket and segment (a tuple of segment codes), bucket by bucket: the
    published values' sum, and the share of the bucket's cell-hours that were published;
    average_present: the sum per hour of the bucket too (person-hours per hour: the people
    present on average, to a tenth). Built column by column from the sums' arrays."""
    columns = [sums.column(codes) for codes in segments]
    if len(segments) == 1:  # a row per bucket: the group's columns as they are
        ((value, weight, count),) = columns
        group = np.zeros(len(stamps), dtype=np.intp)
        hours, starts, ends = stamps.hours, stamps.all_starts, stamps.all_ends
    else:
        value, weight, count = (np.stack([column[part] for column in columns], axis=1).reshape(-1) for part in range(3))
        bucket = np.repeat(np.arange(len(stamps)), len(segments))
        group = np.tile(np.arange(len(segments)), len(stamps))
        hours, starts, ends = stamps.hours[bucket], stamps.starts(bucket), stamps.ends(bucket)
    covered = coverage * hours
    published = count > 0
    number = whole_or_null(value, published)
    table = {
        "start": starts,
        "end": ends,
        "hours": pa.array(hours, pa.int16()),
        **{
            name: labelled(np.array([codes[position] for codes in segments])[group], labels_by_code[name])
            for position, name in enumerate(kind.segments)
        },
        metric.name: number,
        **({metric.deprecated: number} if metric.deprecated else {}),
        "released_share": rounded(np.divide(weight, covered, out=np.zeros_like(weight), where=covered > 0), 4),
        "suppressed": pa.array(~published),
        "suppressed_reason": withheld_reasons(published),
    }
    if average_present:  # of the whole number shown
        table["average_present"] = rounded(np.rint(value) / hours, 1, published)
    return Rows(pa.table({**table, **(beside or {})}))


def withheld_reasons(published: np.ndarray) -> pa.Array:
    """NOT_RELEASED where nothing was published, else null."""
    return pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(len(published), dtype=np.int32), mask=published), label_array((NOT_RELEASED,))
    )


def _cell_table(sums: Sums, metric: Metric) -> pa.Table:
    """Each of the area's cells: its share inside the area and everyone's published values over the period."""
    number = whole_or_null(sums.cell_value, sums.cell_count > 0)
    return pa.table(
        {
            "cell": pa.array([code for code, _ in sums.cells], pa.string()),
            "share": rounded(np.array([share for _, share in sums.cells], dtype=np.float64), 6),
            metric.name: number,
            **({metric.deprecated: number} if metric.deprecated else {}),
        }
    )


@one_report
def catchment_result(query: Query, *, on_progress: Callable[[float], None] | None = None) -> dict:
    """Where the people present in the area live: per home region over the whole period, its
    person-hours and their share of everyone's; and everyone's per local bucket and per cell.

    query.regions: the home regions to list; by default every one with published values.
    """
    metric = CATCHMENT_METRIC
    regions = query.regions
    with report_area(query.geometry) as area:  # both ways read one table of the area's cells
        if is_small_read(places=len(area.cells), start=query.start, end=query.end, time_zone=query.time_zone):
            result, by_region = _catchment_in_two_passes(query, on_progress=on_progress)
        else:
            result, by_region = _catchment_in_one_read(query, on_progress=on_progress)
    result["everyone"] = _value(metric, by_region.pop(0, Released()))  # region 0: everyone
    listed = regions or region_names_by_id(by_region)
    result["regions"] = Rows(_region_table(listed, by_region, metric=metric, total=result["everyone"][metric.name]))
    privacy = result["privacy"]
    privacy["breakdown_values"] = privacy["cell_hours"] * len(listed)
    privacy["breakdown_values_released"] = sum(
        by_region[region].count for region in (regions or by_region) if region in by_region
    )
    privacy["suppressed_values"] += result["regions"].table.column(metric.name).null_count
    return result


def _catchment_in_two_passes(query: Query, *, on_progress) -> tuple[dict, dict[int, Released]]:
    """A small area: everyone's per bucket and per cell, then each home region's over the
    period, whose whole days the day rollup holds (fewer rows to fetch and keep than hours)."""
    result = _cell_hour_result(
        query,
        kind=HOME,
        product="catchment",
        metric=CATCHMENT_METRIC,
        breakdowns=(),
        with_cells=True,
        on_progress=part_of(on_progress, first=0, of=2),
    )
    by_region = {
        region: published
        for (_, region), published in cell_hour_sums(
            **read_of(query, HOME),
            breakdowns=("home_region",),
            with_everyone=True,
            over_period=True,
            on_progress=part_of(on_progress, first=1, of=2),
        ).by_bucket.items()
    }
    return result, by_region


def _catchment_in_one_read(query: Query, *, on_progress) -> tuple[dict, dict[int, Released]]:
    """A large area: its rows read once, everyone's per bucket and per cell and each home
    region's per bucket, the regions' then summed over the period."""
    sums = cell_hour_sums(
        **read_of(query, HOME),
        breakdowns=("home_region",),
        with_everyone=True,
        with_cells=True,
        on_progress=on_progress,
    )
    everyone = replace(
        sums, groups=sums.groups[:1], value=sums.value[:, :1], weight=sums.weight[:, :1], count=sums.count[:, :1]
    )
    result = _cell_hour_result(
        query,
        kind=HOME,
        product="catchment",
        metric=CATCHMENT_METRIC,
        breakdowns=(),
        with_cells=True,
        on_progress=None,
        sums=everyone,
    )
    value, weight, count = (part.sum(axis=0) for part in (sums.value, sums.weight, sums.count))
    by_region = {
        codes[0]: Released(float(value[group]), float(weight[group]), int(count[group]))
        for group, codes in enumerate(sums.groups)
        if count[group]
    }
    return result, by_region


def _region_table(
    listed: Mapping[int, tuple[str, str]], by_region: dict[int, Released], *, metric: Metric, total: int | None
) -> pa.Table:
    """A row per listed home region, the largest first, then the withheld ones by code: its
    published person-hours and their share of everyone's (from published numbers only)."""
    count = np.array([by_region.get(region, Released()).count for region in listed], dtype=np.int64)
    value = np.array([by_region.get(region, Released()).value for region in listed], dtype=np.float64)
    whole = np.rint(value).astype(np.int64)
    published = count > 0
    codes, names = [code for code, _ in listed.values()], [name for _, name in listed.values()]
    # Published before withheld, larger before smaller, then by code.
    order = sorted(
        range(len(codes)), key=lambda row: (not published[row], -whole[row] if published[row] else 0, codes[row])
    )
    whole, published = whole[order], published[order]
    number = whole_or_null(whole, published)
    share = rounded(whole / total, 4, published) if total else pa.nulls(len(order), pa.float64())
    return pa.table(
        {
            "region": pa.array([codes[row] for row in order], pa.string()),
            "name": pa.array([names[row] for row in order], pa.string()),
            metric.name: number,
            **({metric.deprecated: number} if metric.deprecated else {}),
            "share": share,
            "suppressed": pa.array(~published),
            "suppressed_reason": withheld_reasons(published),
        }
    )


@one_report
def od_matrix_result(query: Query, *, on_progress: Callable[[float], None] | None = None) -> dict:
    """Published trips between the zones: a flow list per local bucket and origin-destination
    pair (the pairs with published trips), and an origin x destination matrix over the period.

    query.regions: the zones, in the order of the matrix's rows and columns.
    """
    zones = query.regions
    if zones is None:
        raise ValueError("an od-matrix query needs its zones (Query.regions)")
    sums = trip_sums(
        zones=list(zones),
        start=query.start,
        end=query.end,
        granularity=query.granularity,
        time_zone=query.time_zone,
        version=query.version,
        policy=query.policy.pk,
        on_progress=on_progress,
    )
    metric = TRIPS_METRIC
    stamps = query_stamps(query)
    trips = np.rint(sums.value).astype(np.int64)  # each bucket's published trips are whole
    # Only published flows are listed, by bucket, origin and destination: sums.groups run by
    # origin then destination, both in id order; the rows and columns go in the zones' order.
    flat = np.flatnonzero(sums.count)
    bucket, pair = np.divmod(flat, len(sums.groups))
    hours = stamps.hours[bucket]
    ids = np.fromiter(zones, np.int64, len(zones))
    by_id = np.argsort(ids)
    codes = pa.array([code for code, _ in zones.values()], pa.string())  # this order's: not kept
    flows = pa.table(
        {
            "start": stamps.starts(bucket),
            "end": stamps.ends(bucket),
            "hours": pa.array(hours, pa.int16()),
            "origin": labelled(by_id[pair // len(zones)], codes),
            "destination": labelled(by_id[pair % len(zones)], codes),
            metric.name: pa.array(trips.reshape(-1)[flat], pa.int64()),
            "released_share": rounded(sums.count.reshape(-1)[flat] / hours, 4),
        }
    )
    at_id = np.argsort(by_id)  # each zone's position in id order
    pairs = np.ix_(at_id, at_id)
    pair_trips, pair_counts = (part.sum(axis=0).reshape(len(zones), len(zones))[pairs] for part in (trips, sums.count))
    matrix = [
        [total if count else None for total, count in zip(totals, counts, strict=True)]
        for totals, counts in zip(pair_trips.tolist(), pair_counts.tolist(), strict=True)
    ]
    pair_hours = len(zones) ** 2 * query.hours
    released = int(pair_counts.sum())
    return {
        **_head(query, product="od-matrix", metric=metric, kind=TRIPS),
        "breakdowns": [],
        "zones": [{"zone": code, "name": name} for code, name in zones.values()],
        "matrix": matrix,
        "flows": Rows(flows),
        "privacy": {
            **query.policy.summary(),
            "zone_pair_hours": pair_hours,
            "zone_pair_hours_released": released,
            "released_share": round(released / pair_hours, 4) if pair_hours else None,
            "suppressed_values": int(np.count_nonzero(pair_counts == 0)),
        },
    }
