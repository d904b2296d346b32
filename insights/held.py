"""The packed months of small reads, decoded and kept in the worker's memory between reports.

A small report (a shopping centre over a quarter: some tens of cells, a few months) would spend
most of its time on the round trip that fetches its packed rows (insights/packing.py). Each
place's decoded rows of a month are kept instead, in a cache bounded by bytes (insights/memo.py),
keyed by what makes them what they are:

    (table, segment filter, policy, the dataset versions read, the kind's retention mark, month, place)

The dataset versions read are those of the catalogue (insights/catalogue.py) whose period meets
the month, each with the time its release was built, and the statement reads exactly those: a
release is never changed, so an entry is never stale. A new release for the month is another
key, so the next report reads it; the old entry is left to be evicted. Retention, the one
change to released rows, moves the mark. What a worker does not hold, another worker of the node
may have read (insights/shared.py). The months of the node's own copy (insights/local_months.py)
are not read here: insights/summed.py sums them where they lie.
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
from insights.packing import (
    DAY_SUM,
    DAYS_PER_ROW,
    HOURS_PER_ROW,
    SEGMENT_BITS,
    daily_rows,
    hourly_rows,
    key_changes,
    segment_key_sql,
    versions_added,
)

# 48 MB of decoded months per worker process (a month's row of hours takes 3.7 kB, its row of
# days 0.3 kB, and each place-month 1 kB more): a hundred shopping-centre quarters of footfall,
# twenty of dwell with its bands. A worker peaked at 220 MB without it (bench/run at S): with
# it and insights.areas.AREAS (8 MB) it stays under its 300 MB.
HELD_BYTES = 48 * 2**20
HELD = ByteLRU(HELD_BYTES)


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
    read: Read, *, places: Sequence[int], months: Sequence, versions: Sequence[tuple[tuple[int, dt.datetime], ...]]
) -> list[Month]:
    """The published values of the places in each month (versions: each month's dataset versions
    to read, with their releases' build times: Catalogue.versions), from the cache where held,
    the rest read in one statement and kept."""
    base = (read.table, read.filter_key, read.policy, read.retained_from)
    keys = [
        [(*base, month, month_versions, place) for place in places]
        for month, month_versions in zip(months, versions, strict=True)
    ]
    empty = _empty(read.source)
    entries = [
        [shared.remembered(HELD, key) if month_versions else empty for key in row]
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


def read_months(
    read: Read, *, places: Sequence[int], months: Sequence, versions: Sequence[tuple[tuple[int, dt.datetime], ...]]
) -> list[Month]:
    """The published values of the places in each month, as held_values gives them, read in one
    statement and not kept place by place: for a read of many place-months, whose entries would
    take longer to make and keep than the rows take to read."""
    rows = _rows(
        read, places, months, versions, wanted_months=list(range(len(months))), wanted_places=places, by_month=True
    )
    if not rows:
        return [_month([_empty(read.source)]) for _ in months]
    month, place, segment, values, counts = rows
    bounds = np.searchsorted(month, np.arange(len(months) + 1))  # by month: each month's rows a slice
    return [
        Month(place[start:stop], segment[start:stop], values[start:stop], counts[start:stop])
        for start, stop in itertools.pairwise(bounds.tolist())
    ]


def _fetch(read: Read, places, months, versions, missing: list[tuple[int, int]]) -> dict[tuple[int, int], _Entry]:
    """The missing places' rows of the missing months, as entries by (month, place) position."""
    rows = _rows(
        read,
        places,
        months,
        versions,
        wanted_months=sorted({month for month, _ in missing}),
        wanted_places=sorted({places[place] for _, place in missing}),
    )
    if rows is None:
        return {}
    month, place, segment, values, counts = rows
    bounds = [*np.flatnonzero(key_changes(month, place)).tolist(), len(month)]  # each entry's rows
    return {
        (int(month[start]), int(place[start])): _Entry(
            segment=segment[start:stop].copy(), values=values[start:stop].copy(), counts=counts[start:stop].copy()
        )
        for start, stop in itertools.pairwise(bounds)
    }


def _rows(
    read: Read, places, months, versions, *, wanted_months, wanted_places, by_month: bool = False
) -> tuple[np.ndarray, ...] | None:
    """The wanted places' rows of the wanted months (positions in `months`), in one statement
    fetched in binary, each month's own versions only: (month position, place position in
    `places`, segment key, values, counts), by month (by_month; else by month or by place), place
    and segment, decoded with numpy.
    None if there are none."""
    wanted_months = list(wanted_months)
    key = segment_key_sql(read.segments)
    packed = "t.published_hours, t.published_values" if read.source == "hour" else "t.days, t.day_sums, t.day_hours"
    month_type = "timestamptz" if read.source == "hour" else "date"
    # No ORDER BY: the server would sort the packed columns too (on disk, for rows of hours); the
    # rows are put in order here by their keys.
    sql = (
        f"SELECT array_position(%(months)s::{month_type}[], t.month), t.{read.place}, t.dataset_version_id, {key},"
        f" {packed} FROM {read.table} t"
        f" WHERE t.{read.place} = ANY(%(places)s::bigint[]) AND t.month = ANY(%(months)s::{month_type}[])"
        f" AND t.policy_id = %(policy)s AND t.dataset_version_id = ANY(%(versions)s::int[]) AND {read.where}"
    )
    params = {
        **read.params,
        # As array literals, written once: psycopg would check and dump each item (0.2 ms a statement).
        "places": _array(wanted_places),
        "months": _array(months[month].isoformat() for month in wanted_months),
        "policy": read.policy,
        "versions": _array(sorted({version for month in wanted_months for version, _ in versions[month]})),
    }
    connection.ensure_connection()
    # Django's cursors bind on the client, which gives text results only.
    with psycopg.Cursor(connection.connection) as cursor:
        rows = cursor.execute(sql, params, binary=True).fetchall()
    if not rows:
        return None
    columns = list(zip(*rows, strict=True))
    month = np.asarray(wanted_months, dtype=np.int64)[np.fromiter(columns[0], np.int64, len(rows)) - 1]
    ids = np.asarray(places, dtype=np.int64)
    by_id = np.argsort(ids, kind="stable")
    place_id = np.fromiter(columns[1], np.int64, len(rows))
    place = by_id[np.searchsorted(ids, place_id, sorter=by_id)]
    # Only a month's own versions: another month's version may hold rows of this one's edges.
    version = np.fromiter(columns[2], np.int64, len(rows))
    own = np.array(
        [(month_at << 32) | own for month_at in wanted_months for own, _ in versions[month_at]], dtype=np.int64
    )
    segment = np.fromiter(columns[3], np.int64, len(rows))
    chosen = np.flatnonzero(np.isin((month << 32) | version, own))
    if not len(chosen):
        return None
    # By month then place (as read_months needs them), or by place then month (the day rollup's
    # key, as they mostly come) when they came so and either will do.
    keys = [(segment, place_id, month)] + [(segment, month, place_id)] * (not by_month)
    for sort_keys in keys:
        order = chosen[np.lexsort(tuple(key[chosen] for key in sort_keys))]
        if len(order) == len(rows) and np.all(order[1:] > order[:-1]):
            break
    else:
        order = chosen[np.lexsort(tuple(key[chosen] for key in keys[0]))]
    in_order = len(order) == len(rows) and np.all(order[1:] > order[:-1])
    values, counts = _decoded(read.source, columns[4:], None if in_order else order)
    if not in_order:
        month, place, segment = month[order], place[order], segment[order]
    # A place's segment in several versions of the month (weekly loads): one row, the versions'
    # values added, as a read adds them. They never share an hour (the loader refuses a row loaded
    # before); a local day split between two versions adds its sums and hours.
    (month, place, segment), values, counts = versions_added((month, place, segment), values, counts)
    return month, place, segment, values, counts


def _array(items) -> str:
    """A PostgreSQL array literal of the items (numbers, ISO dates and times: nothing to quote)."""
    return "{" + ",".join(map(str, items)) + "}"


def _decoded(source: str, packed: Sequence[Sequence[bytes]], order: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The rows' packed columns as dense rows: each hour's (or day's) value, and the hours it
    sums; order: the rows to decode, in the order to give them (None: all, as they are)."""
    if source == "hour":
        values, counts = hourly_rows(*packed)
        return (values, counts) if order is None else (values[order], counts[order])
    if order is None:
        return daily_rows(*packed)
    # Each day put straight at its row's place in the order: no copy of the rows after.
    days, sums, hours = packed
    at = np.full(len(days), -1, dtype=np.int64)
    at[order] = np.arange(len(order))
    position = np.repeat(at, np.fromiter(map(len, days), np.int64, len(days)))
    position = position * DAYS_PER_ROW + np.frombuffer(b"".join(days), np.uint8)
    kept = position >= 0
    values = np.zeros((len(order), DAYS_PER_ROW), dtype=np.int64)
    counts = np.zeros((len(order), DAYS_PER_ROW), dtype=np.uint8)
    values.reshape(-1)[position[kept]] = np.frombuffer(b"".join(sums), DAY_SUM)[kept]
    counts.reshape(-1)[position[kept]] = np.frombuffer(b"".join(hours), np.uint8)[kept]
    return values, counts


def _month(entries: list[_Entry]) -> Month:
    """A month's entries, place by place, as one set of rows."""
    return Month(
        place=np.repeat(np.arange(len(entries)), [len(entry.segment) for entry in entries]),
        segment=np.concatenate([entry.segment for entry in entries]),
        values=np.concatenate([entry.values for entry in entries]),
        counts=np.concatenate([entry.counts for entry in entries]),
    )
