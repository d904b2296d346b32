"""The packed months of small reads, decoded and kept in the worker's memory between reports.

A small report (a shopping centre over a quarter: some tens of cells, a few months) would spend
most of its time on the round trip that fetches its packed rows (insights/packing.py). Each
place's decoded rows of a month are kept instead, in a cache bounded by bytes (insights/memo.py),
keyed by what makes them what they are:

    (table, segment filter, policy, the dataset versions read, the kind's retention mark, month, place)

The dataset versions read are those of the catalogue (insights/catalogue.py) whose period meets
the month, and the statement reads exactly those: a release is never changed, so an entry is
never stale. A new release for the month is another key, so the next report reads it; the old
entry is left to be evicted. Retention, the one change to released rows, moves the mark.
What a worker does not hold, another worker of the node may have read: insights/shared.py.
"""

import datetime as dt
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import psycopg
from django.db import connection

from insights import shared
from insights.memo import ByteLRU, arrays_size
from insights.packing import BITMAP_BYTES, HOURLY_VALUE, HOURS_PER_ROW, daily_values

# 48 MB of decoded months per worker process (a month's row of hours takes 3.7 kB, its row of
# days 0.3 kB, and each place-month 1 kB more): a hundred shopping-centre quarters of footfall,
# twenty of dwell with its bands. A worker peaked at 220 MB without it (bench/run at S): with
# it and insights.areas.AREAS (8 MB) it stays under its 300 MB.
HELD_BYTES = 48 * 2**20
HELD = ByteLRU(HELD_BYTES)
SEGMENT_BITS = 16  # a segment code is a smallint
DAYS_PER_ROW = 31


@dataclass(frozen=True)
class Read:
    """Which packed rows a small read takes, apart from its places and months."""

    table: str  # insights_<kind>_released or its _day rollup
    source: str  # "hour" or "day"
    place: str  # the place column: cell_id, or origin_id for trips
    segments: tuple[str, ...]  # the segment columns (trips: the destination)
    where: str  # the condition on the segment columns, over t.
    params: dict  # its parameters
    filter_key: tuple  # what the condition depends on, for the key: its text and parameters
    policy: int
    retained_from: dt.datetime | None  # the kind's retention mark


@dataclass(frozen=True)
class _Entry:
    """One place's published values of one month, a row per segment: each row's value at each
    hour (or day) of the month and how many hours it sums (0 where nothing was published)."""

    segment: np.ndarray  # (rows,) segment keys
    values: np.ndarray  # (rows, 744 hours) int32, or (rows, 31 days) int64
    counts: np.ndarray  # (rows, same) uint8

    @property
    def size(self) -> int:
        return arrays_size((self.segment, self.values, self.counts))


@dataclass(frozen=True)
class Month:
    """The published values of a read's places in one month, a row per place and segment, the
    places in the read's order: each row's place (its position in the read), segment key, and
    per hour (or day) of the month its value and the hours it sums."""

    place: np.ndarray
    segment: np.ndarray
    values: np.ndarray
    counts: np.ndarray


def segment_key(codes: Sequence[int]) -> int:
    """A tuple of segment codes as one integer, as Month.segment holds them."""
    return sum(int(code) << (SEGMENT_BITS * position) for position, code in enumerate(codes))


def held_values(
    read: Read, *, places: Sequence[int], months: Sequence, versions: Sequence[tuple[int, ...]]
) -> list[Month]:
    """The published values of the places in each month (versions: each month's dataset versions
    to read), from the cache where held, the rest read in one statement and kept."""
    base = (read.table, read.filter_key, read.policy, read.retained_from)
    keys = [
        [(*base, month, month_versions, place) for place in places]
        for month, month_versions in zip(months, versions, strict=True)
    ]
    empty = _empty(read.source)
    entries = [
        [HELD.get(key) if month_versions else empty for key in row]
        for row, month_versions in zip(keys, versions, strict=True)
    ]
    missing = [(month, place) for month, row in enumerate(entries) for place, entry in enumerate(row) if entry is None]
    if missing:
        # Those another worker of the node read (insights/shared.py), the rest from the database.
        found = shared.get(read.source, [keys[month][place] for month, place in missing])
        unshared = [at for at, arrays in zip(missing, found, strict=True) if arrays is None]
        fetched = _fetch(read, places, months, versions, unshared) if unshared else {}
        for (month, place), arrays in zip(missing, found, strict=True):
            entry = _Entry(*arrays) if arrays else fetched.get((month, place), empty)
            entries[month][place] = entry
            HELD.put(keys[month][place], entry, entry.size)
        shared.put(read.source, [(keys[month][place], entries[month][place]) for month, place in unshared])
    return [_month(row) for row in entries]


def _width(source: str) -> int:
    return HOURS_PER_ROW if source == "hour" else DAYS_PER_ROW


def _empty(source: str) -> _Entry:
    width = _width(source)
    return _Entry(
        segment=np.zeros(0, dtype=np.int64),
        values=np.zeros((0, width), dtype=np.int32 if source == "hour" else np.int64),
        counts=np.zeros((0, width), dtype=np.uint8),
    )


def _fetch(read: Read, places, months, versions, missing: list[tuple[int, int]]) -> dict[tuple[int, int], _Entry]:
    """The missing places' rows of the missing months, in one statement fetched in binary, as
    entries by (month, place) position, decoded with numpy. Only a month's own versions are kept."""
    wanted_months = sorted({month for month, _ in missing})
    wanted_places = sorted({places[place] for _, place in missing})
    packed = "t.published_hours, t.published_values" if read.source == "hour" else "t.days, t.day_sums, t.day_hours"
    segments = ", ".join(f"t.{name}" for name in read.segments)
    sql = (
        f"SELECT t.month, t.{read.place}, t.dataset_version_id, {segments}, {packed} FROM {read.table} t"
        f" WHERE t.{read.place} = ANY(%(places)s::bigint[])"
        f" AND t.month = ANY(%(months)s::{'timestamptz' if read.source == 'hour' else 'date'}[])"
        f" AND t.policy_id = %(policy)s AND t.dataset_version_id = ANY(%(versions)s::int[]) AND {read.where}"
        f" ORDER BY t.month, t.{read.place}, {segments}, t.dataset_version_id"
    )
    params = {
        **read.params,
        # As array literals, written once: psycopg would check and dump each item (0.2 ms a statement).
        "places": _array(wanted_places),
        "months": _array(months[month].isoformat() for month in wanted_months),
        "policy": read.policy,
        "versions": _array(sorted({version for month in wanted_months for version in versions[month]})),
    }
    connection.ensure_connection()
    # Django's cursors bind on the client, which gives text results only.
    with psycopg.Cursor(connection.connection) as cursor:
        rows = cursor.execute(sql, params, binary=True).fetchall()
    month_of = {months[month]: month for month in wanted_months}
    rows = [row for row in rows if row[2] in versions[month_of[row[0]]]]
    if not rows:
        return {}
    columns = list(zip(*rows, strict=True))
    first = 3 + len(read.segments)  # the packed columns
    values, counts = _decoded(read.source, columns[first:])
    month = np.array([month_of[value] for value in columns[0]], dtype=np.int64)
    place_of = {place: position for position, place in enumerate(places)}
    place = np.array([place_of[value] for value in columns[1]], dtype=np.int64)
    segment = np.zeros(len(rows), dtype=np.int64)
    for position, codes in enumerate(columns[3:first]):
        segment |= np.array(codes, dtype=np.int64) << (SEGMENT_BITS * position)
    # Rows come by month, place and segment. A place's segment in several versions of the month
    # (weekly loads): one row, the versions' values added, as a read adds them. They never share
    # an hour (the loader refuses a row loaded before); a local day split between two versions
    # adds its sums and hours.
    starts = np.flatnonzero(_changes(month, place, segment))
    if len(starts) < len(rows):
        values = np.add.reduceat(values, starts, axis=0, dtype=values.dtype)  # reduceat would widen them
        counts = np.add.reduceat(counts, starts, axis=0, dtype=counts.dtype)
        month, place, segment = month[starts], place[starts], segment[starts]
    bounds = [*np.flatnonzero(_changes(month, place)).tolist(), len(month)]  # each entry's rows
    return {
        (int(month[start]), int(place[start])): _Entry(
            segment=segment[start:stop].copy(), values=values[start:stop].copy(), counts=counts[start:stop].copy()
        )
        for start, stop in itertools.pairwise(bounds)
    }


def _array(items) -> str:
    """A PostgreSQL array literal of the items (numbers, ISO dates and times: nothing to quote)."""
    return "{" + ",".join(map(str, items)) + "}"


def _changes(*keys: np.ndarray) -> np.ndarray:
    """Where sorted rows' keys change: True at each row whose key differs from the one before."""
    changed = np.zeros(len(keys[0]), dtype=bool)
    changed[0] = True
    for key in keys:
        changed[1:] |= key[1:] != key[:-1]
    return changed


def _decoded(source: str, packed: list[tuple[bytes, ...]]) -> tuple[np.ndarray, np.ndarray]:
    """The rows' packed columns as dense rows: each hour's (or day's) value, and the hours it sums."""
    if source == "hour":
        bitmaps, numbers = packed
        # A set bit is a published hour, whose value comes next in hour order: the bits as a mask.
        counts = np.unpackbits(np.frombuffer(b"".join(bitmaps), np.uint8).reshape(len(bitmaps), BITMAP_BYTES), axis=1)
        values = np.zeros(counts.shape, dtype=np.int32)
        values[counts.view(bool)] = np.frombuffer(b"".join(numbers), HOURLY_VALUE)
        return values, counts
    row, day, value, count = daily_values(*packed)
    values = np.zeros((len(packed[0]), DAYS_PER_ROW), dtype=np.int64)
    counts = np.zeros(values.shape, dtype=np.uint8)
    values[row, day], counts[row, day] = value, count
    return values, counts


def _month(entries: list[_Entry]) -> Month:
    """A month's entries, place by place, as one set of rows."""
    return Month(
        place=np.repeat(np.arange(len(entries)), [len(entry.segment) for entry in entries]),
        segment=np.concatenate([entry.segment for entry in entries]),
        values=np.concatenate([entry.values for entry in entries]),
        counts=np.concatenate([entry.counts for entry in entries]),
    )
