"""A report's period and its buckets as the packed months are read: which bucket each stored
hour (or local day) falls in, which of a packed month's columns a period covers, and the months
it touches. Kept per worker for its recent periods: a year of hours is some hundred kB."""

import datetime as dt
import functools
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import numpy as np

from insights.buckets import buckets, local_midnight
from insights.packing import HOURS_PER_ROW
from insights.partitions import month_start, months, next_month


@dataclass(frozen=True)
class MonthSpan:
    """The hours (or days) of a packed month a period covers: one span of its columns, the
    bucket of each run of columns in one bucket, and where those runs start (None: a bucket
    per column)."""

    columns: slice
    buckets: np.ndarray
    runs: np.ndarray | None


@dataclass(frozen=True)
class Period:
    """A report's period and buckets: which bucket each stored hour or local day falls in."""

    start: dt.datetime
    end: dt.datetime
    starts: tuple[dt.datetime, ...]  # each bucket's start
    zone: ZoneInfo
    _lookups: dict = field(default_factory=dict, compare=False)  # buckets_of_month's, by source and month

    @classmethod
    def of(cls, start, end, granularity: str, zone: ZoneInfo, *, over_period: bool, gap=None) -> "Period":
        return _period(start, end, granularity, zone, over_period, gap)

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

    def month_span(self, source: str, month: dt.datetime | dt.date) -> "MonthSpan | None":
        """Which of a packed month's hours (or days) the period covers, and their buckets; None
        if none. Not to be changed: kept."""
        found = self._lookups.get((source, month, "span"), False)
        if found is False:
            lookup = self.buckets_of_month(source, month)
            inside = np.flatnonzero(lookup >= 0)
            found = None
            if len(inside):
                bucket = lookup[inside[0] : inside[-1] + 1]
                runs = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
                found = MonthSpan(
                    columns=slice(int(inside[0]), int(inside[-1]) + 1),
                    buckets=bucket[runs],
                    runs=runs if len(runs) < len(bucket) else None,
                )
            self._lookups[(source, month, "span")] = found
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
def _period(start, end, granularity: str, zone: ZoneInfo, over_period: bool, gap) -> Period:
    if over_period:
        return Period(start=start, end=end, starts=(start,), zone=zone)
    if gap is None:
        starts = tuple(bucket_start for bucket_start, _ in buckets(start, end, granularity, zone))
        return Period(start=start, end=end, starts=starts, zone=zone)
    # Two periods in one read: each bucketed from its own start, the gap between them (if any) a
    # bucket of its own.
    first, second = (_period(*part, granularity, zone, False, None).starts for part in ((start, gap[0]), (gap[1], end)))
    return Period(start=start, end=end, starts=first + gap[:1] * (gap[0] < gap[1]) + second, zone=zone)


def period_starts(start: dt.datetime, end: dt.datetime, granularity: str, zone: ZoneInfo) -> tuple[dt.datetime, ...]:
    """The start of each of the period's buckets, as the sums are keyed."""
    return _period(start, end, granularity, zone, False, None).starts
