"""Local-time buckets. A day is a local calendar day (23 or 25 hours on DST days);
weeks start on Monday; ranges are half-open [start, end)."""

import datetime as dt
from collections.abc import Iterator
from zoneinfo import ZoneInfo

HOUR = dt.timedelta(hours=1)


def bucket_floor(instant: dt.datetime, granularity: str, tz: ZoneInfo) -> dt.datetime:
    """The start of the bucket that contains `instant`."""
    if granularity == "hour":
        # Stored data is UTC-hour aligned; local hours of whole-hour zones coincide.
        return instant.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    local_day = instant.astimezone(tz).date()
    if granularity == "week":
        local_day -= dt.timedelta(days=local_day.weekday())
    elif granularity == "month":
        local_day = local_day.replace(day=1)
    return local_midnight(local_day, tz)


def bucket_next(bucket_start: dt.datetime, granularity: str, tz: ZoneInfo) -> dt.datetime:
    if granularity == "hour":
        return bucket_start + HOUR
    local_day = bucket_start.astimezone(tz).date()
    if granularity == "day":
        return local_midnight(local_day + dt.timedelta(days=1), tz)
    if granularity == "week":
        return local_midnight(local_day + dt.timedelta(days=7), tz)
    year, month = divmod(local_day.month, 12)
    return local_midnight(dt.date(local_day.year + year, month + 1, 1), tz)


def buckets(
    start: dt.datetime, end: dt.datetime, granularity: str, tz: ZoneInfo
) -> Iterator[tuple[dt.datetime, dt.datetime]]:
    """Every bucket in [start, end), as (bucket start, bucket end) in UTC.

    UTC, so that subtracting them gives elapsed time rather than wall-clock time.
    """
    current = bucket_floor(start, granularity, tz)
    while current < end:
        following = bucket_next(current, granularity, tz)
        yield current, following
        current = following


def is_boundary(instant: dt.datetime, granularity: str, tz: ZoneInfo) -> bool:
    return bucket_floor(instant, granularity, tz) == instant


def local_midnight(day: dt.date, tz: ZoneInfo) -> dt.datetime:
    """The instant (in UTC) a local calendar day begins."""
    # Round-trip through UTC so a midnight that falls in a DST gap resolves to a real instant.
    return dt.datetime.combine(day, dt.time(), tzinfo=tz).astimezone(dt.UTC)
