"""The report engine: turns an order into the released result document."""

import datetime as dt
from collections.abc import Callable
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.gis.geos import GEOSGeometry

from insights.buckets import HOUR, buckets
from insights.privacy import release_count
from insights.selectors import presence_totals


def footfall_result(
    *,
    geometry: GEOSGeometry,
    start: dt.datetime,
    end: dt.datetime,
    granularity: str,
    time_zone: str,
    version: int,
    on_progress: Callable[[float], None] | None = None,
) -> dict:
    """People present per local bucket: the sum over the bucket's hours of the hourly counts."""
    totals = presence_totals(
        geometry=geometry,
        start=start,
        end=end,
        granularity=granularity,
        time_zone=time_zone,
        version=version,
        on_progress=on_progress,
    )
    tz = ZoneInfo(time_zone)
    series = []
    for bucket_start, bucket_end in buckets(start, end, granularity, tz):
        # A bucket with no rows had only counts the operator dropped upstream as too small.
        released = release_count(totals.get(bucket_start, 0.0))
        series.append(
            {
                "start": bucket_start.astimezone(tz).isoformat(),
                "end": bucket_end.astimezone(tz).isoformat(),
                "hours": int((bucket_end - bucket_start) / HOUR),
                "visits": released.value,
                "suppressed": released.suppressed,
            }
        )
    return {
        "product": "footfall",
        "metric": "visits",
        "granularity": granularity,
        "time_zone": time_zone,
        "start": start.astimezone(tz).isoformat(),
        "end": end.astimezone(tz).isoformat(),
        "dataset_version": version,
        "privacy": {
            "k": settings.PRIVACY_K,
            "suppressed_buckets": sum(1 for row in series if row["suppressed"]),
        },
        "series": series,
    }
