"""The report engine: turns an order into the released result document."""

import datetime as dt
import itertools
from collections.abc import Callable, Collection
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.gis.geos import GEOSGeometry

from insights.buckets import HOUR, buckets
from insights.privacy import release_count
from insights.segments import AGE_BANDS, GENDERS
from insights.selectors import presence_cell_totals, presence_totals

# Each dimension a report may break down by, with its labels (code 0 is "all").
DIMENSIONS = {"age_band": AGE_BANDS, "gender": GENDERS}


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
    query = {
        "geometry": geometry,
        "start": start,
        "end": end,
        "granularity": granularity,
        "time_zone": time_zone,
        "version": version,
    }
    # With a breakdown there are two passes, each half of the work.
    passes = 2 if breakdowns else 1
    totals = presence_totals(**query, on_progress=_part_of(on_progress, first=0, of=passes))
    tz = ZoneInfo(time_zone)
    periods = list(buckets(start, end, granularity, tz))
    series = [_row(totals, bucket, tz, 0, 0) for bucket in periods]
    result = {
        "product": "footfall",
        "metric": "visits",
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
        by_segment = presence_totals(
            **query,
            breakdowns=breakdowns,
            on_progress=_part_of(on_progress, first=1, of=passes),
        )
        codes = [range(1, len(labels)) if name in breakdowns else [0] for name, labels in DIMENSIONS.items()]
        result["segments"] = [
            _row(by_segment, bucket, tz, age, gender) for bucket in periods for age, gender in itertools.product(*codes)
        ]
        suppressed += sum(row["suppressed"] for row in result["segments"])
    if with_cells:
        cells = presence_cell_totals(**query)
        result["cells"] = [_cell(code, share, visits) for code, share, visits in cells]
        suppressed += sum(cell["suppressed"] for cell in result["cells"])
    result["privacy"] = {"k": settings.PRIVACY_K, "suppressed_values": suppressed}
    return result


def _cell(code: str, share: float, visits: float) -> dict:
    released = release_count(visits)
    return {"cell": code, "share": round(share, 6), "visits": released.value, "suppressed": released.suppressed}


def _part_of(on_progress, *, first: int, of: int) -> Callable[[float], None] | None:
    """Report pass number `first` (from 0) of `of` passes as its share of the whole."""
    if on_progress is None:
        return None
    return lambda done: on_progress((first + done) / of)


def _row(sums: dict, bucket: tuple[dt.datetime, dt.datetime], tz: ZoneInfo, age: int, gender: int) -> dict:
    bucket_start, bucket_end = bucket
    # A value with no rows had only counts the operator dropped upstream as too small.
    released = release_count(sums.get((bucket_start, age, gender), 0.0))
    return {
        "start": bucket_start.astimezone(tz).isoformat(),
        "end": bucket_end.astimezone(tz).isoformat(),
        "hours": int((bucket_end - bucket_start) / HOUR),
        "age_band": AGE_BANDS[age],
        "gender": GENDERS[gender],
        "visits": released.value,
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
