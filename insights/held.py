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
"""

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import psycopg
from django.db import connection

from insights.memo import ByteLRU, arrays_size
from insights.packing import daily_values, hourly_values

# 64 MB of decoded months per worker process (about 4 bytes of cache a published hourly value
# and 1 kB a place-month): some hundreds of shopping-centre quarters. A worker stays well
# under its 300 MB with it.
HELD_BYTES = 64 * 2**20
HELD = ByteLRU(HELD_BYTES)
SEGMENT_BITS = 16  # a segment code is a smallint


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
    """One place's published values of one month: its rows' segment keys and lengths, then per
    value the hour (or day) of the month, the value and, for days, the hours it sums."""

    row_segment: np.ndarray
    row_length: np.ndarray
    position: np.ndarray
    value: np.ndarray
    count: np.ndarray | None

    @property
    def size(self) -> int:
        return arrays_size((self.row_segment, self.row_length, self.position, self.value, self.count))


@dataclass(frozen=True)
class Values:
    """Every published value of a read, places by the read's order within months by theirs:
    its place's and month's positions in the read, its segment key, its hour or day of the
    month, the value and how many hours it sums."""

    place: np.ndarray
    month: np.ndarray
    segment: np.ndarray
    position: np.ndarray
    value: np.ndarray
    count: np.ndarray


def segment_key(codes: Sequence[int]) -> int:
    """A tuple of segment codes as one integer, as Values.segment holds them."""
    return sum(int(code) << (SEGMENT_BITS * position) for position, code in enumerate(codes))


def held_values(read: Read, *, places: Sequence[int], months: Sequence, versions: Sequence[tuple[int, ...]]) -> Values:
    """The published values of the places in the months (versions: each month's dataset versions
    to read), from the cache where held, the rest read in one statement and kept."""
    base = (read.table, read.filter_key, read.policy, read.retained_from)
    keys = [
        [(*base, month, month_versions, place) for place in places]
        for month, month_versions in zip(months, versions, strict=True)
    ]
    entries = [
        [HELD.get(key) if month_versions else _EMPTY for key in row]
        for row, month_versions in zip(keys, versions, strict=True)
    ]
    missing = [(month, place) for month, row in enumerate(entries) for place, entry in enumerate(row) if entry is None]
    if missing:
        fetched = _fetch(read, places, months, versions, missing)
        for month, place in missing:
            entry = fetched.get((month, place), _EMPTY)
            entries[month][place] = entry
            HELD.put(keys[month][place], entry, entry.size)
    return _assembled(entries, hourly=read.source == "hour")


def _empty() -> _Entry:
    nothing = np.zeros(0, dtype=np.int64)
    return _Entry(row_segment=nothing, row_length=nothing, position=nothing, value=nothing, count=None)


_EMPTY = _empty()


def _fetch(read: Read, places, months, versions, missing: list[tuple[int, int]]) -> dict[tuple[int, int], _Entry]:
    """The missing places' rows of the missing months, in one statement, as entries by (month,
    place) position. Only a month's own versions are kept."""
    wanted_months = sorted({month for month, _ in missing})
    wanted_places = sorted({places[place] for _, place in missing})
    packed = "t.published_hours, t.published_values" if read.source == "hour" else "t.days, t.day_sums, t.day_hours"
    segments = ", ".join(f"t.{name}" for name in read.segments)
    sql = (
        f"SELECT t.month, t.{read.place}, t.dataset_version_id, {segments}, {packed} FROM {read.table} t"
        f" WHERE t.{read.place} = ANY(%(places)s::bigint[]) AND t.month = ANY(%(months)s)"
        f" AND t.policy_id = %(policy)s AND t.dataset_version_id = ANY(%(versions)s) AND {read.where}"
        f" ORDER BY t.month, t.{read.place}, {segments}, t.dataset_version_id"
    )
    params = {
        **read.params,
        # As an array literal, written once: psycopg would check and dump each id.
        "places": "{" + ",".join(map(str, wanted_places)) + "}",
        "months": [months[month] for month in wanted_months],
        "policy": read.policy,
        "versions": sorted({version for month in wanted_months for version in versions[month]}),
    }
    connection.ensure_connection()
    # Django's cursors bind on the client, which gives text results only.
    with psycopg.Cursor(connection.connection) as cursor:
        rows = cursor.execute(sql, params, binary=True).fetchall()
    month_of = {months[month]: month for month in wanted_months}
    place_of = {place: position for position, place in enumerate(places)}
    first = 3 + len(read.segments)  # the packed columns
    rows = [row for row in rows if row[2] in versions[month_of[row[0]]]]
    if not rows:
        return {}
    if read.source == "hour":
        row, position, value = hourly_values([row[first] for row in rows], [row[first + 1] for row in rows])
        value, count = value.astype(np.int32), None
    else:
        row, position, value, count = daily_values(*([row[first + column] for row in rows] for column in range(3)))
        count = count.astype(np.uint8)
    position = position.astype(np.int16)
    lengths = np.bincount(row, minlength=len(rows))
    ends = np.cumsum(lengths)
    segment = np.array([segment_key(row[3:first]) for row in rows], dtype=np.int64)
    owner = [(month_of[row[0]], place_of[row[1]]) for row in rows]
    found, start = {}, 0
    while start < len(rows):  # rows come by month and place: each entry's rows are together
        stop = start
        while stop < len(rows) and owner[stop] == owner[start]:
            stop += 1
        first_value, last_value = ends[start] - lengths[start], ends[stop - 1]
        found[owner[start]] = _Entry(
            row_segment=segment[start:stop].copy(),
            row_length=lengths[start:stop].astype(np.int32),
            position=position[first_value:last_value].copy(),
            value=value[first_value:last_value].copy(),
            count=None if count is None else count[first_value:last_value].copy(),
        )
        start = stop
    return found


def _assembled(entries: list[list[_Entry]], *, hourly: bool) -> Values:
    """The entries' values in one set of arrays, month by month, place by place."""
    flat = [(month, place, entry) for month, row in enumerate(entries) for place, entry in enumerate(row)]
    sizes = np.array([len(entry.position) for _, _, entry in flat], dtype=np.int64)
    if not sizes.sum():
        nothing = np.zeros(0, dtype=np.int64)
        return Values(nothing, nothing, nothing, nothing, np.zeros(0), np.zeros(0))
    full = [(month, place, entry) for month, place, entry in flat if len(entry.position)]
    segment = np.repeat(
        np.concatenate([entry.row_segment for _, _, entry in full]),
        np.concatenate([entry.row_length for _, _, entry in full]),
    )
    value = np.concatenate([entry.value for _, _, entry in full]).astype(float)
    count = np.ones(len(value)) if hourly else np.concatenate([entry.count for _, _, entry in full]).astype(float)
    return Values(
        place=np.repeat(np.array([place for _, place, _ in flat]), sizes),
        month=np.repeat(np.array([month for month, _, _ in flat]), sizes),
        segment=segment,
        position=np.concatenate([entry.position for _, _, entry in full]).astype(np.int64),
        value=value,
        count=count,
    )
