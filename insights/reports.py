"""The report engine: turns an order into its result document.

Every number of a result is computed from published values only (insights.releases): sums of
them, weighted by the share of each cell inside the area, and what follows from those sums
(shares, changes). Nothing here reads a withheld value, so no result, and no set of results,
tells more than the release it was computed from.
"""

import contextlib
import datetime as dt
import functools
import gc
import itertools
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from zoneinfo import ZoneInfo

import numpy as np
from django.contrib.gis.geos import GEOSGeometry

from insights.buckets import HOUR, buckets
from insights.kinds import DWELL, HOME, PRESENCE, TRIPS, AggregateKind, Metric
from insights.models import ReleasePolicy
from insights.selectors import dataset_sources, region_names_by_id
from insights.sums import Released, Sums, cell_hour_sums, report_area, trip_sums

NOT_RELEASED = "not_released"  # none of the values the number sums was published

# What each product's number counts, and the name it had before (kept for one release).
# Presence summed over a bucket's hours counts person-hours, not visits; dwell counts arrivals.
FOOTFALL_METRIC = Metric("person_hours", deprecated="visits")  # footfall and compare
DWELL_METRIC = Metric("visits", deprecated="visitors")
CATCHMENT_METRIC = Metric("person_hours", deprecated="visitors")
TRIPS_METRIC = Metric("trips")


def _without_cyclic_gc(compute: Callable[..., dict]) -> Callable[..., dict]:
    """Compute a report with the cyclic garbage collector paused. A result is tens of thousands
    of small rows that all live until it is stored; the collector would walk them again and
    again and find no cycle. Reference counting still frees what the report lets go."""

    @functools.wraps(compute)
    def paused(*args, **kwargs) -> dict:
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


@_without_cyclic_gc
def footfall_result(
    query: Query, *, with_cells: bool = True, on_progress: Callable[[float], None] | None = None
) -> dict:
    """People present per local bucket, as person-hours (the sum over the bucket's hours of the
    people present in each) and their average per hour, per segment of the requested
    breakdowns, and per cell over the whole period."""
    result = _cell_hour_result(
        query,
        kind=PRESENCE,
        product="footfall",
        metric=FOOTFALL_METRIC,
        breakdowns=query.breakdowns,
        with_cells=with_cells,
        on_progress=on_progress,
    )
    for row in itertools.chain(result["series"], result.get("segments", [])):
        value = row["person_hours"]
        row["average_present"] = None if value is None else round(value / row["hours"], 1)
    return result


@_without_cyclic_gc
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
) -> dict:
    # Everyone's sums and the breakdowns' in one scan.
    sums = cell_hour_sums(
        **_read(query, kind),
        breakdowns=breakdowns,
        with_everyone=True,
        with_cells=with_cells,
        on_progress=on_progress,
    )
    tz = ZoneInfo(query.time_zone)
    periods = list(buckets(query.start, query.end, query.granularity, tz))
    stamps = _bucket_stamps(periods, tz)
    labels = kind.labels()
    coverage = sum(share for _, share in sums.cells)  # the area in cells: what a bucket's hours are weighed by
    everyone = (0,) * len(kind.segments)
    rows = functools.partial(_rows, kind, labels, sums, stamps, metric=metric, coverage=coverage)
    result = {
        **_head(query, product=product, metric=metric, kind=kind),
        "breakdowns": list(breakdowns),
        "series": rows(segments=[everyone]),
    }
    counted = Counted(cell_hours=len(sums.cells) * query.hours, coverage=coverage * query.hours)
    counted.add_everyone(sums, everyone)
    if breakdowns:
        codes = [range(1, len(labels[name])) if name in breakdowns else [0] for name in kind.segments]
        segments = list(itertools.product(*codes))
        result["segments"] = rows(segments=segments)
        counted.add_breakdowns(sums, segments)
    if with_cells:
        result["cells"] = [
            {"cell": code, "share": round(share, 6), **_value(metric, published)}
            for code, share, published in sums.by_cell
        ]
    result["privacy"] = counted.summary(query.policy, result)
    return result


def _read(query: Query, kind: AggregateKind) -> dict:
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
        self.cell_hours_released += sum(counts)
        self.released_weight += sum(weights)

    def add_breakdowns(self, sums: Sums, segments: list[tuple]) -> None:
        self.breakdown_values += self.cell_hours * len(segments)
        self.breakdown_values_released += sum(sum(sums.column(codes)[2]) for codes in segments)

    def summary(self, policy: ReleasePolicy, result: dict) -> dict:
        numbers = [row for part in ("series", "segments", "cells", "regions", "flows") for row in result.get(part, [])]
        metric = result["metric"]
        return {
            **policy.summary(),
            "cell_hours": self.cell_hours,
            "cell_hours_released": self.cell_hours_released,
            "released_share": round(self.released_weight / self.coverage, 4) if self.coverage else None,
            "breakdown_values": self.breakdown_values,
            "breakdown_values_released": self.breakdown_values_released,
            "suppressed_values": sum(row.get(metric) is None for row in numbers),
        }


def _elapsed_hours(start: dt.datetime, end: dt.datetime) -> int:
    # In UTC: two times of one zone subtract as wall-clock times, 24 hours across a 23-hour day.
    return int((end.astimezone(dt.UTC) - start.astimezone(dt.UTC)) / HOUR)


def _part_of(on_progress, *, first: int, of: int) -> Callable[[float], None] | None:
    """Report pass number `first` (from 0) of `of` passes as its share of the whole."""
    if on_progress is None:
        return None
    return lambda done: on_progress((first + done) / of)


def _bucket_stamps(periods: list[tuple[dt.datetime, dt.datetime]], tz: ZoneInfo) -> list[tuple[str, str, int]]:
    """Each bucket's local start and end as text, and its hours; a boundary is formatted once."""
    boundaries = [bucket_start for bucket_start, _ in periods] + [periods[-1][1]]
    text = [boundary.astimezone(tz).isoformat() for boundary in boundaries]
    return [
        (text[index], text[index + 1], int((bucket_end - bucket_start) / HOUR))
        for index, (bucket_start, bucket_end) in enumerate(periods)
    ]


def _rows(
    kind: AggregateKind,
    labels_by_code: dict[str, tuple],
    sums: Sums,
    stamps: list[tuple[str, str, int]],
    *,
    metric: Metric,
    coverage: float,
    segments: list[tuple],
) -> list[dict]:
    """One row per bucket and segment (a tuple of segment codes), bucket by bucket: the
    published values' sum, and the share of the bucket's cell-hours that were published."""
    labelled = [
        (
            {name: labels_by_code[name][code] for name, code in zip(kind.segments, codes, strict=True)},
            sums.column(codes),
        )
        for codes in segments
    ]
    # Whole numbers, rounded half to even as round() does, all at once.
    labelled = [
        (labels, (np.rint(values).astype(np.int64).tolist(), weights, counts))
        for labels, (values, weights, counts) in labelled
    ]
    rows = []
    name, deprecated = metric.name, metric.deprecated
    for bucket, (start_text, end_text, hours) in enumerate(stamps):
        covered = coverage * hours
        for labels, (values, weights, counts) in labelled:
            count = counts[bucket]
            number = values[bucket] if count else None
            row = {"start": start_text, "end": end_text, "hours": hours, **labels, name: number}
            if deprecated:
                row[deprecated] = number
            row["released_share"] = round(weights[bucket] / covered, 4) if covered else 0.0
            row["suppressed"] = not count
            row["suppressed_reason"] = None if count else NOT_RELEASED
            rows.append(row)
    return rows


@_without_cyclic_gc
def compare_result(query: Query, *, on_progress: Callable[[float], None] | None = None) -> dict:
    """Footfall of the ordered period and area beside a comparison period or area, bucket by
    bucket, with the change from the comparison (which is the reference, e.g. last year)."""
    # Compare takes no breakdowns: its two passes are everyone's footfall.
    ordered_query = replace(query, breakdowns=(), comparison_start=None, comparison_end=None, comparison_geometry=None)
    comparison_query = replace(
        ordered_query,
        geometry=query.comparison_geometry or query.geometry,
        start=query.comparison_start or query.start,
        end=query.comparison_end or query.end,
    )
    # Over one area, both periods read one table of its cells.
    shared_area = report_area(query.geometry) if query.comparison_geometry is None else contextlib.nullcontext()
    with shared_area:
        ordered = footfall_result(ordered_query, with_cells=False, on_progress=_part_of(on_progress, first=0, of=2))
        comparison = footfall_result(
            comparison_query, with_cells=False, on_progress=_part_of(on_progress, first=1, of=2)
        )
    series = [_paired(mine, theirs) for mine, theirs in zip(ordered["series"], comparison["series"], strict=True)]
    privacy = {
        name: ordered["privacy"][name] + comparison["privacy"][name]
        for name in ("cell_hours", "cell_hours_released", "breakdown_values", "breakdown_values_released")
    }
    released = [part["privacy"]["released_share"] for part in (ordered, comparison)]
    return {
        **{key: ordered[key] for key in ("metric", "granularity", "time_zone", "start", "end", "dataset_version")},
        "sources": ordered["sources"]
        + [source for source in comparison["sources"] if source not in ordered["sources"]],
        "product": "compare",
        "breakdowns": [],
        "comparison": {
            "start": comparison["start"],
            "end": comparison["end"],
            "other_area": bool(query.comparison_geometry),
        },
        "series": series,
        "privacy": {
            **ordered["privacy"],
            **privacy,
            "released_share": min((share for share in released if share is not None), default=None),
            "suppressed_values": ordered["privacy"]["suppressed_values"] + comparison["privacy"]["suppressed_values"],
        },
    }


def _paired(mine: dict, theirs: dict) -> dict:
    both = mine["person_hours"] is not None and theirs["person_hours"] is not None
    change = mine["person_hours"] - theirs["person_hours"] if both else None
    return {
        **mine,
        "comparison_start": theirs["start"],
        "comparison_end": theirs["end"],
        "comparison_person_hours": theirs["person_hours"],
        "comparison_visits": theirs["person_hours"],
        "comparison_released_share": theirs["released_share"],
        "comparison_suppressed": theirs["suppressed"],
        "comparison_suppressed_reason": theirs["suppressed_reason"],
        "change": change,
        "change_pct": round(100 * change / theirs["person_hours"], 1)
        if change is not None and theirs["person_hours"]
        else None,
    }


@_without_cyclic_gc
def catchment_result(query: Query, *, on_progress: Callable[[float], None] | None = None) -> dict:
    """Where the people present in the area live: per home region over the whole period, its
    person-hours and their share of everyone's; and everyone's per local bucket and per cell.

    query.regions: the home regions to list; by default every one with published values.
    """
    metric = CATCHMENT_METRIC
    regions = query.regions
    with report_area(query.geometry):  # both passes read one table of the area's cells
        result = _cell_hour_result(
            query,
            kind=HOME,
            product="catchment",
            metric=metric,
            breakdowns=(),
            with_cells=True,
            on_progress=_part_of(on_progress, first=0, of=2),
        )
        by_region = {
            region: published
            for (_, region), published in cell_hour_sums(
                **_read(query, HOME),
                breakdowns=("home_region",),
                with_everyone=True,
                over_period=True,
                on_progress=_part_of(on_progress, first=1, of=2),
            ).by_bucket.items()
        }
    result["everyone"] = _value(metric, by_region.pop(0, Released()))  # region 0: everyone
    total = result["everyone"][metric.name]
    rows = []
    for region, (code, name) in (regions or region_names_by_id(by_region)).items():
        row = {"region": code, "name": name, **_value(metric, by_region.get(region, Released()))}
        # Shares come from published numbers only.
        row["share"] = round(row[metric.name] / total, 4) if row[metric.name] is not None and total else None
        row["suppressed"] = row[metric.name] is None
        row["suppressed_reason"] = NOT_RELEASED if row["suppressed"] else None
        rows.append(row)
    rows.sort(key=lambda row: (row[metric.name] is None, -(row[metric.name] or 0), row["region"]))
    result["regions"] = rows
    privacy = result["privacy"]
    privacy["breakdown_values"] = privacy["cell_hours"] * len(rows)
    privacy["breakdown_values_released"] = sum(
        by_region[region].count for region in (regions or by_region) if region in by_region
    )
    privacy["suppressed_values"] += sum(row[metric.name] is None for row in rows)
    return result


@_without_cyclic_gc
def od_matrix_result(query: Query, *, on_progress: Callable[[float], None] | None = None) -> dict:
    """Published trips between the zones: a flow list per local bucket and origin-destination
    pair (the pairs with published trips), and an origin x destination matrix over the period.

    query.regions: the zones, in the order of the matrix's rows and columns.
    """
    zones = query.regions
    if zones is None:
        raise ValueError("an od-matrix query needs its zones (Query.regions)")
    tz = ZoneInfo(query.time_zone)
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
    stamps = _bucket_stamps(list(buckets(query.start, query.end, query.granularity, tz)), tz)
    labels = [{"origin": zones[origin][0], "destination": zones[destination][0]} for origin, destination in sums.groups]
    trips = np.rint(sums.value).astype(np.int64)  # each bucket's published trips are whole
    flows = []  # only published flows are listed, by bucket, origin and destination
    for bucket, pair in zip(*np.nonzero(sums.count), strict=True):
        start_text, end_text, hours = stamps[bucket]
        flows.append(
            {
                "start": start_text,
                "end": end_text,
                "hours": hours,
                **labels[pair],
                metric.name: int(trips[bucket, pair]),
                "released_share": round(float(sums.count[bucket, pair]) / hours, 4),
            }
        )
    pair_trips, pair_counts = trips.sum(axis=0).tolist(), sums.count.sum(axis=0).tolist()
    published = {
        pair: total if count else None for pair, total, count in zip(sums.groups, pair_trips, pair_counts, strict=True)
    }
    matrix = [[published[(origin, destination)] for destination in zones] for origin in zones]
    pair_hours = len(zones) ** 2 * query.hours
    released = int(sum(pair_counts))
    return {
        **_head(query, product="od-matrix", metric=metric, kind=TRIPS),
        "breakdowns": [],
        "zones": [{"zone": code, "name": name} for code, name in zones.values()],
        "matrix": matrix,
        "flows": flows,
        "privacy": {
            **query.policy.summary(),
            "zone_pair_hours": pair_hours,
            "zone_pair_hours_released": released,
            "released_share": round(released / pair_hours, 4) if pair_hours else None,
            "suppressed_values": sum(value is None for row in matrix for value in row),
        },
    }
