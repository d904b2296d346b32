"""The report engine: turns an order into the released result document."""

import contextlib
import datetime as dt
import functools
import gc
import hashlib
import itertools
from collections.abc import Callable, Collection
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from django.contrib.gis.geos import GEOSGeometry

from insights.buckets import HOUR, buckets
from insights.kinds import DWELL, HOME, PRESENCE, AggregateKind
from insights.privacy import Count, Guard, Policy, default_policy
from insights.selectors import cell_hour_sums, cell_hour_totals, region_names_by_id, report_area, trip_sums


def _without_cyclic_gc(compute: Callable[..., dict]) -> Callable[..., dict]:
    """Compute a report with the cyclic garbage collector paused. A result is tens of thousands
    of small rows and counts that all live until it is stored; the collector would walk them
    again and again and find no cycle (half an od-matrix's time). Reference counting still
    frees what the report lets go."""

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


@_without_cyclic_gc
def footfall_result(
    *,
    geometry: GEOSGeometry,
    start: dt.datetime,
    end: dt.datetime,
    granularity: str,
    time_zone: str,
    version: int,
    breakdowns: Collection[str] = (),
    with_cells: bool = True,
    policy: Policy | None = None,
    released_before: list[dict] | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> dict:
    """People present per local bucket (the sum over the bucket's hours of the hourly
    counts), per segment of the requested breakdowns, and per cell over the whole period."""
    draft = _cell_hour_draft(
        kind=PRESENCE,
        product="footfall",
        geometry=geometry,
        start=start,
        end=end,
        granularity=granularity,
        time_zone=time_zone,
        version=version,
        breakdowns=breakdowns,
        with_cells=with_cells,
        policy=policy or default_policy(),
        on_progress=on_progress,
        released_before=released_before,
    )
    return _released(draft)


@_without_cyclic_gc
def dwell_result(
    *,
    geometry: GEOSGeometry,
    start: dt.datetime,
    end: dt.datetime,
    granularity: str,
    time_zone: str,
    version: int,
    policy: Policy | None = None,
    released_before: list[dict] | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> dict:
    """Visitors per local bucket, in all and per dwell band (how long they stayed)."""
    draft = _cell_hour_draft(
        kind=DWELL,
        product="dwell",
        geometry=geometry,
        start=start,
        end=end,
        granularity=granularity,
        time_zone=time_zone,
        version=version,
        breakdowns=("dwell_band",),
        with_cells=True,
        policy=policy or default_policy(),
        on_progress=on_progress,
        released_before=released_before,
    )
    return _released(draft)


@dataclass
class _Draft:
    """A cell-hour result before the guard has released it, with the counts it registered."""

    result: dict
    guard: Guard
    series: list[Count]
    cells: list[Count]


def _cell_hour_draft(
    *,
    kind: AggregateKind,
    product: str,
    geometry: GEOSGeometry,
    start: dt.datetime,
    end: dt.datetime,
    granularity: str,
    time_zone: str,
    version: int,
    breakdowns: Collection[str],
    with_cells: bool,
    policy: Policy,
    on_progress: Callable[[float], None] | None,
    released_before: list[dict] | None = None,
) -> _Draft:
    query = {
        "kind": kind,
        "geometry": geometry,
        "start": start,
        "end": end,
        "granularity": granularity,
        "time_zone": time_zone,
        "version": version,
    }
    # Everyone's sums and the breakdowns' in one scan.
    sums = cell_hour_sums(
        **query, breakdowns=breakdowns, with_everyone=True, with_cells=with_cells, on_progress=on_progress
    )
    # The cells the area covers seed the guard's noise.
    guard = Guard(policy, scope=(product, granularity, time_zone, _area_key(sums.cells)))
    tz = ZoneInfo(time_zone)
    periods = list(buckets(start, end, granularity, tz))
    stamps = _bucket_stamps(periods, tz)
    labels = kind.labels()
    everyone = (0,) * len(kind.segments)
    series, series_counts = _rows(kind, labels, sums.by_bucket, periods, stamps, guard, segments=[everyone])
    result = {
        "product": product,
        "metric": kind.value,
        "granularity": granularity,
        "time_zone": time_zone,
        "start": start.astimezone(tz).isoformat(),
        "end": end.astimezone(tz).isoformat(),
        "dataset_version": version,
        "breakdowns": list(breakdowns),
        "series": series,
    }
    if breakdowns:
        codes = [range(1, len(labels[name])) if name in breakdowns else [0] for name in kind.segments]
        segments = list(itertools.product(*codes))
        result["segments"], segment_counts = _rows(
            kind, labels, sums.by_bucket, periods, stamps, guard, segments=segments
        )
        # A bucket's total is the sum of its segments.
        for number, total in enumerate(series_counts):
            guard.relate([total], segment_counts[number * len(segments) : (number + 1) * len(segments)])
        if released_before:
            guard.earlier(released_before, kind.value, segment_counts, labels=tuple(kind.segments))
    if released_before:
        guard.earlier(released_before, kind.value, series_counts, labels=tuple(kind.segments))
    cell_counts = []
    if with_cells:
        result["cells"] = []
        for code, share, count in sums.by_cell:
            row = {"cell": code, "share": round(share, 6)}
            cell_counts.append(guard.count(row, kind.value, count, "cell", code))
            result["cells"].append(row)
        # Over the period, the buckets add up to the same as the cells.
        guard.relate(series_counts, cell_counts)
    return _Draft(result=result, guard=guard, series=series_counts, cells=cell_counts)


def _released(draft: _Draft) -> dict:
    """The draft's numbers as the guard releases them, and what it withheld."""
    suppressed = draft.guard.release()
    draft.result["privacy"] = {**draft.guard.policy.summary(), "suppressed_values": suppressed}
    return draft.result


def _area_key(cells: list[tuple[str, float]]) -> str:
    """The area as the data sees it: its cells and their shares. The same area asked again
    gets the same noise."""
    text = ";".join(f"{code}:{share:.6f}" for code, share in cells)
    return hashlib.sha256(text.encode()).hexdigest()


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
    sums: dict,
    periods: list[tuple[dt.datetime, dt.datetime]],
    stamps: list[tuple[str, str, int]],
    guard: Guard,
    *,
    segments: list[tuple],
) -> tuple[list[dict], list[Count]]:
    """One row per bucket and segment (a tuple of segment codes), bucket by bucket, each
    registered with the guard."""
    labelled = [
        (codes, {name: labels_by_code[name][code] for name, code in zip(kind.segments, codes, strict=True)})
        for codes in segments
    ]
    rows, counts = [], []
    metric = kind.value
    for (bucket_start, _), (start_text, end_text, hours) in zip(periods, stamps, strict=True):
        for codes, labels in labelled:
            row = {"start": start_text, "end": end_text, "hours": hours}
            row.update(labels)
            # A value with no rows had only counts the operator dropped upstream as too small.
            counts.append(guard.count(row, metric, sums.get((bucket_start, *codes), 0.0), start_text, codes))
            rows.append(row)
    return rows, counts


@_without_cyclic_gc
def compare_result(
    *,
    geometry: GEOSGeometry,
    start: dt.datetime,
    end: dt.datetime,
    granularity: str,
    time_zone: str,
    version: int,
    comparison_start: dt.datetime | None = None,
    comparison_end: dt.datetime | None = None,
    comparison_geometry: GEOSGeometry | None = None,
    policy: Policy | None = None,
    released_before: list[dict] | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> dict:
    """Footfall of the ordered period and area beside a comparison period or area, bucket by
    bucket, with the change from the comparison (which is the reference, e.g. last year)."""
    # Over one area, both periods read one table of its cells.
    shared_area = report_area(geometry) if comparison_geometry is None else contextlib.nullcontext()
    with shared_area:
        common = {"granularity": granularity, "time_zone": time_zone, "version": version}
        common = {**common, "with_cells": False, "policy": policy or default_policy()}
        ordered = footfall_result(
            geometry=geometry,
            start=start,
            end=end,
            **common,
            on_progress=_part_of(on_progress, first=0, of=2),
            released_before=released_before,
        )
        comparison = footfall_result(
            geometry=comparison_geometry or geometry,
            start=comparison_start or start,
            end=comparison_end or end,
            **common,
            on_progress=_part_of(on_progress, first=1, of=2),
            # What was released before is over the ordered area.
            released_before=None if comparison_geometry else released_before,
        )
    series = [_paired(mine, theirs) for mine, theirs in zip(ordered["series"], comparison["series"], strict=True)]
    return {
        **{key: ordered[key] for key in ("metric", "granularity", "time_zone", "start", "end", "dataset_version")},
        "product": "compare",
        "breakdowns": [],
        "comparison": {"start": comparison["start"], "end": comparison["end"], "other_area": bool(comparison_geometry)},
        "series": series,
        "privacy": {
            **ordered["privacy"],
            "suppressed_values": ordered["privacy"]["suppressed_values"] + comparison["privacy"]["suppressed_values"],
        },
    }


def _paired(mine: dict, theirs: dict) -> dict:
    # A change is only given between two released numbers: it must not reveal a withheld one.
    both = mine["visits"] is not None and theirs["visits"] is not None
    change = mine["visits"] - theirs["visits"] if both else None
    return {
        **mine,
        "comparison_start": theirs["start"],
        "comparison_end": theirs["end"],
        "comparison_visits": theirs["visits"],
        "comparison_suppressed": theirs["suppressed"],
        "comparison_suppressed_reason": theirs["suppressed_reason"],
        "change": change,
        "change_pct": round(100 * change / theirs["visits"], 1) if change is not None else None,
    }


@_without_cyclic_gc
def catchment_result(
    *,
    geometry: GEOSGeometry,
    start: dt.datetime,
    end: dt.datetime,
    granularity: str,
    time_zone: str,
    version: int,
    regions: dict[int, tuple[str, str]] | None = None,
    policy: Policy | None = None,
    released_before: list[dict] | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> dict:
    """Where the people present in the area live: per home region over the whole period,
    its count (the sum of hourly counts) and its share of everyone present; and everyone
    present per local bucket and per cell.

    regions: the home regions to list, {region id: (code, name)}; by default every one with visitors.
    """
    with report_area(geometry):  # both passes read one table of the area's cells
        draft = _cell_hour_draft(
            kind=HOME,
            product="catchment",
            geometry=geometry,
            start=start,
            end=end,
            granularity=granularity,
            time_zone=time_zone,
            version=version,
            breakdowns=(),
            with_cells=True,
            policy=policy or default_policy(),
            on_progress=_part_of(on_progress, first=0, of=2),
            released_before=released_before,
        )
        by_region = {
            region: count
            for (_, region), count in cell_hour_totals(
                kind=HOME,
                geometry=geometry,
                start=start,
                end=end,
                granularity=granularity,
                time_zone=time_zone,
                version=version,
                breakdowns=("home_region",),
                over_period=True,
                on_progress=_part_of(on_progress, first=1, of=2),
            ).items()
        }
    guard = draft.guard
    result = draft.result
    result["everyone"] = {}
    everyone = guard.count(result["everyone"], "visitors", sum(count.exact for count in draft.series), "everyone")
    guard.relate([everyone], draft.series)
    rows, region_counts = [], []
    for region, (code, name) in (regions or region_names_by_id(by_region)).items():
        row = {"region": code, "name": name}
        region_counts.append(guard.count(row, "visitors", by_region.get(region, 0.0), "region", code))
        rows.append(row)
    # Everyone includes people of unknown home, so the regions add up to less; withholding
    # as if they added up to everyone only withholds more.
    guard.relate([everyone], region_counts)
    result["regions"] = rows
    _released(draft)
    for row in rows:
        # Shares come from released numbers only, so they reveal nothing the counts do not.
        released = row["visitors"] is not None and result["everyone"]["visitors"]
        row["share"] = round(row["visitors"] / result["everyone"]["visitors"], 4) if released else None
    rows.sort(key=lambda row: (row["visitors"] is None, -(row["visitors"] or 0), row["region"]))
    return result


@_without_cyclic_gc
def od_matrix_result(
    *,
    start: dt.datetime,
    end: dt.datetime,
    granularity: str,
    time_zone: str,
    version: int,
    zones: dict[int, tuple[str, str]],
    policy: Policy | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> dict:
    """Trips between the zones: a flow list per local bucket and origin-destination pair,
    and an origin x destination matrix over the whole period.

    zones: {region id: (code, name)} in the order of the matrix's rows and columns.
    """
    tz = ZoneInfo(time_zone)
    sums = trip_sums(
        zones=list(zones),
        start=start,
        end=end,
        granularity=granularity,
        time_zone=time_zone,
        version=version,
        on_progress=on_progress,
    )
    guard = Guard(policy or default_policy(), scope=("od-matrix", granularity, time_zone, tuple(zones)))
    periods = list(buckets(start, end, granularity, tz))
    stamps = dict(zip((bucket_start for bucket_start, _ in periods), _bucket_stamps(periods, tz), strict=True))
    flows, flows_of_pair = [], {}
    for (bucket_start, origin, destination), trips in sums.items():
        start_text, end_text, hours = stamps[bucket_start]
        flow = {
            "start": start_text,
            "end": end_text,
            "hours": hours,
            "origin": zones[origin][0],
            "destination": zones[destination][0],
        }
        count = guard.count(flow, "trips", trips, flow["start"], origin, destination)
        flows_of_pair.setdefault((origin, destination), []).append(count)
        flows.append(flow)
    # A pair absent from every bucket had no trips the operator released: withheld, like a small count.
    cells = {(origin, destination): {} for origin in zones for destination in zones}
    for (origin, destination), cell in cells.items():
        pair_flows = flows_of_pair.get((origin, destination), [])
        total = guard.count(cell, "trips", sum(count.exact for count in pair_flows), "period", origin, destination)
        guard.relate([total], pair_flows)
    suppressed = guard.release()
    return {
        "product": "od-matrix",
        "metric": "trips",
        "granularity": granularity,
        "time_zone": time_zone,
        "start": start.astimezone(tz).isoformat(),
        "end": end.astimezone(tz).isoformat(),
        "dataset_version": version,
        "breakdowns": [],
        "zones": [{"zone": code, "name": name} for code, name in zones.values()],
        "matrix": [[cells[(origin, destination)]["trips"] for destination in zones] for origin in zones],
        "flows": flows,
        "privacy": {**guard.policy.summary(), "suppressed_values": suppressed},
    }
