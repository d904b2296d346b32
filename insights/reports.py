"""The report engine: turns an order into the released result document."""

import datetime as dt
import itertools
from collections.abc import Callable, Collection
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.gis.geos import GEOSGeometry

from insights.buckets import HOUR, buckets
from insights.kinds import DWELL, HOME, PRESENCE, AggregateKind
from insights.privacy import release_count
from insights.selectors import cell_hour_sums, cell_hour_totals, region_names_by_id, trip_sums


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
    result, _ = _cell_hour_result(
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
    return result


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
    result, _ = _cell_hour_result(
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
    return result


def _cell_hour_result(
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
    on_progress: Callable[[float], None] | None,
) -> tuple[dict, dict[tuple, float]]:
    """The result document, and the unreleased per-bucket totals it was made from."""
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
    stamps = _bucket_stamps(periods, tz)
    labels = kind.labels()
    series = _rows(kind, labels, totals, periods, stamps, segments=[(0,) * len(kind.segments)])
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
        codes = [range(1, len(labels[name])) if name in breakdowns else [0] for name in kind.segments]
        result["segments"] = _rows(kind, labels, by_segment, periods, stamps, segments=list(itertools.product(*codes)))
        suppressed += sum(row["suppressed"] for row in result["segments"])
    if with_cells:
        result["cells"] = [_cell(kind, code, share, count) for code, share, count in sums.by_cell]
        suppressed += sum(cell["suppressed"] for cell in result["cells"])
    result["privacy"] = {"k": settings.PRIVACY_K, "suppressed_values": suppressed}
    return result, totals


def _cell(kind: AggregateKind, code: str, share: float, count: float) -> dict:
    released = release_count(count)
    return {"cell": code, "share": round(share, 6), kind.value: released.value, "suppressed": released.suppressed}


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
    *,
    segments: list[tuple],
) -> list[dict]:
    """One row per bucket and segment (a tuple of segment codes), bucket by bucket."""
    labelled = [
        (codes, {name: labels_by_code[name][code] for name, code in zip(kind.segments, codes, strict=True)})
        for codes in segments
    ]
    rows = []
    metric = kind.value
    for (bucket_start, _), (start_text, end_text, hours) in zip(periods, stamps, strict=True):
        for codes, labels in labelled:
            # A value with no rows had only counts the operator dropped upstream as too small.
            value = release_count(sums.get((bucket_start, *codes), 0.0)).value
            row = {"start": start_text, "end": end_text, "hours": hours}
            row.update(labels)
            row[metric] = value
            row["suppressed"] = value is None
            rows.append(row)
    return rows


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


def catchment_result(
    *,
    geometry: GEOSGeometry,
    start: dt.datetime,
    end: dt.datetime,
    granularity: str,
    time_zone: str,
    version: int,
    regions: dict[int, tuple[str, str]] | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> dict:
    """Where the people present in the area live: per home region over the whole period,
    its count (the sum of hourly counts) and its share of everyone present; and everyone
    present per local bucket and per cell.

    regions: the home regions to list, {region id: (code, name)}; by default every one with visitors.
    """
    result, totals = _cell_hour_result(
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
        on_progress=_part_of(on_progress, first=0, of=2),
    )
    by_region: dict[int, float] = {}
    by_bucket_and_region = cell_hour_totals(
        kind=HOME,
        geometry=geometry,
        start=start,
        end=end,
        granularity=granularity,
        time_zone=time_zone,
        version=version,
        breakdowns=("home_region",),
        on_progress=_part_of(on_progress, first=1, of=2),
    )
    for (_, region), count in by_bucket_and_region.items():
        by_region[region] = by_region.get(region, 0.0) + count
    everyone = release_count(sum(totals.values()))
    regions = regions or region_names_by_id(by_region)
    rows = []
    for region, (code, name) in regions.items():
        released = release_count(by_region.get(region, 0.0))
        # Shares come from released numbers only, so they reveal nothing the counts do not.
        share = released.value / everyone.value if released.value is not None and everyone.value else None
        rows.append(
            {
                "region": code,
                "name": name,
                "visitors": released.value,
                "share": round(share, 4) if share is not None else None,
                "suppressed": released.suppressed,
            }
        )
    rows.sort(key=lambda row: (row["visitors"] is None, -(row["visitors"] or 0), row["region"]))
    result["everyone"] = {"visitors": everyone.value, "suppressed": everyone.suppressed}
    result["regions"] = rows
    result["privacy"]["suppressed_values"] += sum(row["suppressed"] for row in rows) + everyone.suppressed
    return result


def od_matrix_result(
    *,
    start: dt.datetime,
    end: dt.datetime,
    granularity: str,
    time_zone: str,
    version: int,
    zones: dict[int, tuple[str, str]],
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
    bucket_ends = dict(buckets(start, end, granularity, tz))
    flows, by_pair = [], {}
    for (bucket_start, origin, destination), trips in sorted(sums.items()):
        by_pair[(origin, destination)] = by_pair.get((origin, destination), 0) + trips
        released = release_count(trips)
        bucket_end = bucket_ends[bucket_start]
        flows.append(
            {
                "start": bucket_start.astimezone(tz).isoformat(),
                "end": bucket_end.astimezone(tz).isoformat(),
                "hours": int((bucket_end - bucket_start) / HOUR),
                "origin": zones[origin][0],
                "destination": zones[destination][0],
                "trips": released.value,
                "suppressed": released.suppressed,
            }
        )
    # A pair absent from every bucket had no trips the operator released: withheld, like a small count.
    matrix = [[release_count(by_pair.get((origin, destination), 0)) for destination in zones] for origin in zones]
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
        "matrix": [[released.value for released in row] for row in matrix],
        "flows": flows,
        "privacy": {
            "k": settings.PRIVACY_K,
            "suppressed_values": sum(flow["suppressed"] for flow in flows)
            + sum(released.suppressed for row in matrix for released in row),
        },
    }
