"""The report engine: turns an order into the released result document."""

import datetime as dt
import itertools
from collections.abc import Callable, Collection
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.gis.geos import GEOSGeometry

from insights.buckets import HOUR, buckets
from insights.kinds import DWELL, PRESENCE, CellHourKind
from insights.privacy import release_count
from insights.selectors import cell_hour_sums, cell_hour_totals


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
    on_progress: Callable[[float], None] | None = None,
) -> dict:
    """People present per local bucket (the sum over the bucket's hours of the hourly
    counts), per segment of the requested breakdowns, and per cell over the whole period."""
    return _cell_hour_result(
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
        on_progress=on_progress,
    )


def dwell_result(
    *,
    geometry: GEOSGeometry,
    start: dt.datetime,
    end: dt.datetime,
    granularity: str,
    time_zone: str,
    version: int,
    on_progress: Callable[[float], None] | None = None,
) -> dict:
    """Visitors per local bucket, in all and per dwell band (how long they stayed)."""
    return _cell_hour_result(
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
        on_progress=on_progress,
    )


def _cell_hour_result(
    *,
    kind: CellHourKind,
    product: str,
    geometry: GEOSGeometry,
    start: dt.datetime,
    end: dt.datetime,
    granularity: str,
    time_zone: str,
    version: int,
    breakdowns: Collection[str],
    with_cells: bool,
    on_progress: Callable[[float], None] | None,
) -> dict:
    query = {
        "kind": kind,
        "geometry": geometry,
        "start": start,
        "end": end,
        "granularity": granularity,
        "time_zone": time_zone,
        "version": version,
    }
    # With a breakdown there are two passes, each half of the work.
    passes = 2 if breakdowns else 1
    sums = cell_hour_sums(**query, with_cells=with_cells, on_progress=_part_of(on_progress, first=0, of=passes))
    totals = sums.by_bucket
    tz = ZoneInfo(time_zone)
    periods = list(buckets(start, end, granularity, tz))
    everyone = (0,) * len(kind.segments)
    series = [_row(kind, totals, bucket, tz, everyone) for bucket in periods]
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
    suppressed = sum(row["suppressed"] for row in series)
    if breakdowns:
        by_segment = cell_hour_totals(
            **query, breakdowns=breakdowns, on_progress=_part_of(on_progress, first=1, of=passes)
        )
        codes = [range(1, len(labels)) if name in breakdowns else [0] for name, labels in kind.segments.items()]
        result["segments"] = [
            _row(kind, by_segment, bucket, tz, segment) for bucket in periods for segment in itertools.product(*codes)
        ]
        suppressed += sum(row["suppressed"] for row in result["segments"])
    if with_cells:
        result["cells"] = [_cell(kind, code, share, count) for code, share, count in sums.by_cell]
        suppressed += sum(cell["suppressed"] for cell in result["cells"])
    result["privacy"] = {"k": settings.PRIVACY_K, "suppressed_values": suppressed}
    return result


def _cell(kind: CellHourKind, code: str, share: float, count: float) -> dict:
    released = release_count(count)
    return {"cell": code, "share": round(share, 6), kind.value: released.value, "suppressed": released.suppressed}


def _part_of(on_progress, *, first: int, of: int) -> Callable[[float], None] | None:
    """Report pass number `first` (from 0) of `of` passes as its share of the whole."""
    if on_progress is None:
        return None
    return lambda done: on_progress((first + done) / of)


def _row(kind: CellHourKind, sums: dict, bucket: tuple[dt.datetime, dt.datetime], tz: ZoneInfo, codes: tuple) -> dict:
    bucket_start, bucket_end = bucket
    # A value with no rows had only counts the operator dropped upstream as too small.
    released = release_count(sums.get((bucket_start, *codes), 0.0))
    labels = {name: kind.segments[name][code] for name, code in zip(kind.segments, codes, strict=True)}
    return {
        "start": bucket_start.astimezone(tz).isoformat(),
        "end": bucket_end.astimezone(tz).isoformat(),
        "hours": int((bucket_end - bucket_start) / HOUR),
        **labels,
        kind.value: released.value,
        "suppressed": released.suppressed,
    }


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
    on_progress: Callable[[float], None] | None = None,
) -> dict:
    """Footfall of the ordered period and area beside a comparison period or area, bucket by
    bucket, with the change from the comparison (which is the reference, e.g. last year)."""
    common = {"granularity": granularity, "time_zone": time_zone, "version": version}
    common = {**common, "with_cells": False}
    ordered = footfall_result(
        geometry=geometry, start=start, end=end, **common, on_progress=_part_of(on_progress, first=0, of=2)
    )
    comparison = footfall_result(
        geometry=comparison_geometry or geometry,
        start=comparison_start or start,
        end=comparison_end or end,
        **common,
        on_progress=_part_of(on_progress, first=1, of=2),
    )
    series = [_paired(mine, theirs) for mine, theirs in zip(ordered["series"], comparison["series"], strict=True)]
    return {
        **{key: ordered[key] for key in ("metric", "granularity", "time_zone", "start", "end", "dataset_version")},
        "product": "compare",
        "breakdowns": [],
        "comparison": {"start": comparison["start"], "end": comparison["end"], "other_area": bool(comparison_geometry)},
        "series": series,
        "privacy": {
            "k": settings.PRIVACY_K,
            "suppressed_values": sum(row["suppressed"] + row["comparison_suppressed"] for row in series),
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
        "change": change,
        "change_pct": round(100 * change / theirs["visits"], 1) if change is not None else None,
    }
