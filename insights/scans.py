"""Large reads of the released tables (insights/packing.py): the packed rows of many places
in plain statements, streamed from the server in batches of bounded size and decoded into
insights.held.Month's rows, which insights/sums.py sums as it sums the months kept in memory.

A statement is streamed (libpq's chunked rows), not fetched whole nor through a server-side
cursor: memory stays bounded whatever the area, there is no round trip per batch, and the
server goes on reading while a batch is decoded and summed. The day rollup is read in one
statement (it is one table, which a statement scans whole); the hours a month at a time (a
month is a partition of its own), or a few months together when they hold few rows.
"""

import datetime as dt
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import psycopg
from django.db import connection

from insights.held import Month
from insights.packing import DAYS_PER_ROW, HOURS_PER_ROW, daily_rows, hourly_rows, segment_key_sql

# Hours or days of the packed rows decoded at once (336 rows of hours, 8,064 of days): a batch
# takes some MB whatever the area. Twice as many gave the same times at L, and 23 MB more peak RSS.
POSITIONS_PER_BATCH = 250_000
# Months of hours are read in one statement while their rows are expected to be at most this
# many (places x segments x months, an upper bound): a read of few rows (the trips between
# some zones, hour by hour) is one round trip.
ROWS_PER_STATEMENT = 50_000


@dataclass(frozen=True)
class Scan:
    """Which packed rows a large read takes, apart from its places and months."""

    table: str  # insights_<kind>_released or its _day rollup
    source: str  # "hour" or "day"
    place: str  # the place column: cell_id, or origin_id for trips
    segments: tuple[str, ...]  # the segment columns (trips: the destination)
    where: str  # the condition on the segment columns and the release, over t.
    params: dict  # its parameters


def scanned_months(
    scan: Scan,
    *,
    places: Sequence[int],
    months: Sequence[dt.datetime | dt.date],
    rows_per_month: int,
    on_progress: Callable[[float], None] | None,
) -> Iterator[tuple[dt.datetime | dt.date, Month]]:
    """The published values of the places in the months, as (month, its rows) a batch at a time
    (a month may come in several batches, the months of a statement in any order). Month.place
    is the position of the row's place in `places`, Month.segment its segment key
    (insights.held.segment_key). Reports the fraction done after each batch: the statements read,
    and the share of the places read in the current one (a release is written in place order,
    insights/releases.py, so its rows come mostly that way), then after each statement."""
    ids = np.array(places, dtype=np.int64)
    by_id = np.argsort(ids)
    if scan.source == "day":
        steps = [months]
    else:
        per_statement = max(1, ROWS_PER_STATEMENT // max(1, rows_per_month))
        steps = [months[start : start + per_statement] for start in range(0, len(months), per_statement)]
    width = HOURS_PER_ROW if scan.source == "hour" else DAYS_PER_ROW
    batch_rows = max(1, POSITIONS_PER_BATCH // width)
    params = {**scan.params, "places": "{" + ",".join(map(str, places)) + "}"}  # written once: see _statement
    connection.ensure_connection()
    # Django's cursors bind on the client, which gives text results only.
    reported = 0.0
    with psycopg.Cursor(connection.connection) as cursor:
        for done, step in enumerate(steps):
            rows = cursor.stream(_statement(scan), {**params, "months": step}, binary=True, size=batch_rows)
            seen = np.zeros(len(places), dtype=bool)  # the places read so far
            while batch := list(itertools.islice(rows, batch_rows)):
                for month, found in _decoded(batch, scan.source, step, ids=ids[by_id], positions=by_id):
                    seen[found.place] = True
                    yield month, found
                reported = _progress(on_progress, (done + float(seen.mean())) / len(steps), reported)
            reported = _progress(on_progress, (done + 1) / len(steps), reported)


def _progress(on_progress: Callable[[float], None] | None, fraction: float, reported: float) -> float:
    """Reports the fraction done if it moved on; returns the last one reported."""
    if on_progress and fraction > reported:
        on_progress(fraction)
        return fraction
    return reported


def _statement(scan: Scan) -> str:
    """A row: its month's position in %(months)s (from 1), its place, its segment key, its packed
    columns. The places are an array literal: psycopg would check and dump each of thousands of ids."""
    key = segment_key_sql(scan.segments)
    packed = "t.published_hours, t.published_values" if scan.source == "hour" else "t.days, t.day_sums, t.day_hours"
    return (
        f"SELECT array_position(%(months)s, t.month), t.{scan.place}, {key}, {packed} FROM {scan.table} t"
        f" WHERE t.{scan.place} = ANY(%(places)s::bigint[]) AND t.month = ANY(%(months)s) AND {scan.where}"
    )


def _decoded(
    batch: list[tuple], source: str, months: Sequence, *, ids: np.ndarray, positions: np.ndarray
) -> Iterator[tuple[dt.datetime | dt.date, Month]]:
    """A batch of rows decoded, split by month. ids: the read's place ids sorted, positions:
    their positions in the read."""
    columns = list(zip(*batch, strict=True))
    month = np.fromiter(columns[0], np.int64, len(batch)) - 1
    place = positions[np.searchsorted(ids, np.fromiter(columns[1], np.int64, len(batch)))]
    segment = np.fromiter(columns[2], np.int64, len(batch))
    values, counts = hourly_rows(*columns[3:5]) if source == "hour" else daily_rows(*columns[3:6])
    if month.min() == month.max():
        yield months[month[0]], Month(place=place, segment=segment, values=values, counts=counts)
        return
    # Sorted by month once: each month's rows are then a slice.
    order = np.argsort(month, kind="stable")
    month, place, segment, values, counts = month[order], place[order], segment[order], values[order], counts[order]
    starts = np.flatnonzero(np.r_[True, month[1:] != month[:-1]])
    for start, stop in zip(starts, [*starts[1:], len(month)], strict=True):
        rows = slice(start, stop)
        yield months[month[start]], Month(place[rows], segment[rows], values[rows], counts[rows])
