"""A report's buckets as its rows show them: each bucket's local start and end as ISO 8601 text
(with the zone's offset at that instant, as datetime.isoformat() writes it) and its hours.

Formatted as arrays: a zone changes its offset at most once a day, so the offset is looked up
twice a UTC day rather than once a bucket, and the text is made by numpy."""

import datetime as dt
import functools
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa

from insights.rows import labelled

DAY_SECONDS = 86_400


@dataclass(frozen=True)
class Stamps:
    text: pa.Array  # each boundary's local text: bucket i runs from text[i] to text[i + 1]
    hours: np.ndarray  # each bucket's hours (int16)

    def __len__(self) -> int:
        return len(self.hours)

    def starts(self, bucket: np.ndarray) -> pa.DictionaryArray:
        """The start of each given bucket, each distinct text stored once."""
        return labelled(bucket, self.text[:-1])

    def ends(self, bucket: np.ndarray) -> pa.DictionaryArray:
        return labelled(bucket, self.text[1:])

    @functools.cached_property
    def all_starts(self) -> pa.DictionaryArray:
        """Every bucket's start, in order: made once for the period's reports (kept with it)."""
        return self.starts(np.arange(len(self)))

    @functools.cached_property
    def all_ends(self) -> pa.DictionaryArray:
        return self.ends(np.arange(len(self)))


def bucket_stamps(starts: list[dt.datetime], end: dt.datetime, zone: ZoneInfo) -> Stamps:
    """starts: each bucket's start (aware), in order; end: the last one's end."""
    epoch = np.array([instant.timestamp() for instant in (*starts, end)], dtype=np.int64)
    offsets = utc_offsets(epoch, zone)
    local = np.datetime_as_string((epoch + offsets).astype("datetime64[s]"), unit="s")
    distinct, position = np.unique(offsets, return_inverse=True)
    suffixes = np.array([_offset_text(int(seconds)) for seconds in distinct])
    text = np.char.add(local, suffixes[position])
    hours = (np.diff(epoch) // 3600).astype(np.int16)
    hours.flags.writeable = False  # kept for the period's next reports (insights/reports.py)
    return Stamps(text=pa.array(text, pa.string()), hours=hours)


def utc_offsets(epoch: np.ndarray, zone: ZoneInfo) -> np.ndarray:
    """The zone's UTC offset in seconds at each instant (epoch seconds, ascending)."""
    offsets = np.empty(len(epoch), dtype=np.int64)
    day = epoch // DAY_SECONDS
    firsts = np.flatnonzero(np.r_[True, day[1:] != day[:-1]])
    for first, after in zip(firsts, np.r_[firsts[1:], len(epoch)], strict=True):
        at_first, at_last = _offset(epoch[first], zone), _offset(epoch[after - 1], zone)
        if at_first == at_last:  # no change within the day
            offsets[first:after] = at_first
        else:  # the day of a change: each instant of it
            offsets[first:after] = [_offset(instant, zone) for instant in epoch[first:after]]
    return offsets


def _offset(epoch_second: np.int64, zone: ZoneInfo) -> int:
    return int(dt.datetime.fromtimestamp(int(epoch_second), zone).utcoffset().total_seconds())


def _offset_text(seconds: int) -> str:
    """'+01:00', as isoformat() writes an offset (with seconds when it has some)."""
    return dt.datetime(2000, 1, 1, tzinfo=dt.timezone(dt.timedelta(seconds=seconds))).isoformat()[19:]
