"""The node's own copy of the release's recent months, as dense arrays in files its workers map.

A service's first report of a new area after a release finds nothing in any worker's memory
(insights/held.py) or in the node's shared months (insights/shared.py): it would read every
month from PostgreSQL, a round trip and the packed rows decoded, as slow as DuckDB over the same
hourly values (docs/scaling.md, section 6). So after each release the node writes the recent
months of every kind (four months of hours, thirteen of days: a day row is a tenth of an hour
row), under the current policy, as the reports read them: per (table, month), each row's place,
segment key, values per hour (or day) and hours counted, a row per place and segment (its
dataset versions added, as a read adds them: a month of weekly loads is one row, not five), by
place, then segment, in .npy files a worker maps read-only (np.load, mmap_mode). A place's rows
of a month are then a slice of the page cache: no round trip, no decoding.

A month's copy is keyed as held.py keys what it keeps: the table, the policy, the kind's
retention mark, the month and its dataset versions with their releases' build times
(Catalogue.versions). A new release for the month, a policy change or retention is another key,
so a copy is never stale: a read whose key has no copy reads the shared months or PostgreSQL, as
before. A copy is written whole into a directory of its own and renamed into place, so a worker
never maps a part-written one. Older copies of a month, and months no longer recent, are deleted
by the next write; retention deletes the copies of what it drops (forget_months_before).

The node also records which areas its workers shared through Redis (insights/shared.py): an
empty file per area, named by the digest of its key, in a directory per catalogue state (the
previous states' deleted when the copy of a new state's grid is written). A new area's first
report then makes a `stat` instead of a Redis round trip that would find nothing (0.4-0.7 ms of a
shopping centre's first report with the CPU's caches cold). A mark is only a hint: one whose entry
expired costs the round trip it would have cost anyway, and an area shared without a mark is
weighed again, as a new area is.

The files live in LOCAL_MONTHS_DIR (empty: no copy), a directory per database; on a node of its
own each node writes its copy (docs/operations.md).
"""

import contextlib
import datetime as dt
import functools
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import psycopg
from django.conf import settings
from django.db import connection, transaction

from insights.catalogue import catalogue, release_state
from insights.grid import ROW
from insights.kinds import KINDS, AggregateKind
from insights.packing import DAYS_PER_ROW, HOURS_PER_ROW, daily_rows, hourly_rows, segment_key_sql, versions_added
from insights.partitions import month_start, next_month

logger = logging.getLogger(__name__)

_FILES = ("place", "bounds", "segment", "values", "counts")
_BATCH_ROWS = 2_000  # rows decoded at a time while writing: a few MB
_WRITER_LOCK = 0x6C6F63616C6D6F6E  # the advisory lock of the copy's writers ("localmon")
_FORMAT = 2  # of the files: a copy of another is another key (1: a row per dataset version too)
_OPENED = 128  # copies a worker keeps mapped: a year of days and a few months of hours of each kind


class MonthChanged(Exception):
    """The month's rows changed while they were copied."""


@dataclass(frozen=True)
class Copy:
    """One month of a table: the places (ascending), where each one's rows start and end
    (bounds[i]:bounds[i + 1]), and each row's segment key, values and hours counted; summed for
    an area where they lie (insights.summed.summed_copy)."""

    place: np.ndarray
    bounds: np.ndarray
    segment: np.ndarray
    values: np.ndarray
    counts: np.ndarray


def enabled() -> bool:
    return bool(settings.LOCAL_MONTHS_DIR)


def database_dir() -> Path:
    """Where this database's copies are."""
    return Path(settings.LOCAL_MONTHS_DIR) / settings.DATABASES["default"]["NAME"]


def _month_name(month: dt.datetime | dt.date) -> str:
    return f"{month:%Y-%m}"


def _path(table: str, policy: int, retained_from: dt.datetime | None, month, versions: Sequence) -> Path:
    """Where a month's copy is, named by everything that makes it what it is."""
    return database_dir() / table / _month_name(month) / _name(table, policy, retained_from, month, tuple(versions))


@functools.lru_cache(maxsize=1024)  # a report asks for each of its months
def _name(table: str, policy: int, retained_from: dt.datetime | None, month, versions: tuple) -> str:
    key = repr(
        (
            _FORMAT,
            table,
            policy,
            retained_from.isoformat() if retained_from else None,
            month.isoformat(),
            tuple((version, built_at.isoformat()) for version, built_at in versions),
        )
    )
    return hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


def opened(table: str, policy: int, retained_from, month, versions) -> Copy | None:
    """The month's copy, mapped (kept mapped in this process), or None if the node has none."""
    if not enabled() or not versions:
        return None
    key = (settings.LOCAL_MONTHS_DIR, settings.DATABASES["default"]["NAME"], table, policy, retained_from, month)
    found = _MAPPED.get((*key, versions))
    if found is None:
        found = _mapped(_path(table, policy, retained_from, month, tuple(versions)))
        if found is not None:
            if len(_MAPPED) >= _OPENED:
                _MAPPED.pop(next(iter(_MAPPED)))
            _MAPPED[(*key, versions)] = found
    return found


def _mapped(path: Path) -> Copy | None:
    """The copy in `path`, mapped; None if there is none (yet: the next write may make it)."""
    try:
        # As plain arrays over the mapping: numpy's memmap class costs microseconds an index.
        return Copy(*(np.asarray(np.load(path / f"{name}.npy", mmap_mode="r")) for name in _FILES))
    except FileNotFoundError:
        return None
    except OSError as exc:  # a cache: a report that cannot read it reads the database
        logger.warning("local copy of the recent months: %s could not be read (%s)", path, exc)
        return None


# The copies mapped lately, by key (a copy never changes: a new one has another key).
_MAPPED: dict[tuple, Copy] = {}


def write() -> list[str]:
    """Bring the node's copy up to date with the releases: each kind's recent months, to the
    newest data, of the hourly table (LOCAL_MONTHS) and of the day rollup (LOCAL_DAY_MONTHS), under
    the policy reports read, written where there is no copy under their key yet; then every other
    copy deleted. Returns a line per month written. Run after each release (marketplace/tasks.py)."""
    if not enabled():
        return []
    from insights.selectors import current_release_policy

    policy = current_release_policy()
    if policy is None:
        return []
    with _one_writer():
        return _write_current(policy)


@contextlib.contextmanager
def _one_writer() -> Iterator[None]:
    """One writer at a time: the releases of one load land together and each queues its warm-up;
    the next writer, once the first is done, finds its months written and writes only what a
    later release changed. A session lock: PostgreSQL frees it if the writer dies."""
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [_WRITER_LOCK])
        try:
            yield
        finally:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [_WRITER_LOCK])


def _write_current(policy) -> list[str]:
    """write(), under the lock."""
    seen = catalogue()
    try:
        _write_cells(seen.state)
    except OSError as failed:  # the disk full: areas are weighed over the database's cells
        logger.warning("local copy of the recent months: the grid's cells not written: %s", failed)
    written, current = [], set()
    for kind in KINDS.values():
        releases = [release for release in seen.releases if release.kind == kind.name and release.policy == policy.pk]
        if not releases:
            continue
        newest = max(release.period_end for release in releases) - dt.timedelta(microseconds=1)
        retained_from = seen.retained_from.get(kind.name)
        latest = max(release.version for release in releases)
        for source in ("hour", "day"):
            table = f"{kind.table}_released{'' if source == 'hour' else '_day'}"
            for month in _recent(source, newest):
                if retained_from and month_start(next_month(month)) <= retained_from:
                    continue  # dropped by retention
                versions = seen.versions(
                    kind=kind.name,
                    policy=policy.pk,
                    version=latest,
                    start=month_start(month),
                    end=month_start(next_month(month)),
                )
                if not versions:
                    continue
                path = _path(table, policy.pk, retained_from, month, versions)
                current.add(path)
                if not path.exists():
                    started = time.perf_counter()
                    try:
                        rows = _write(
                            path,
                            table=table,
                            kind=kind,
                            source=source,
                            month=month,
                            policy=policy.pk,
                            versions=versions,
                        )
                    except (MonthChanged, OSError) as failed:
                        # Retention meanwhile, or the disk full: reports read Redis or PostgreSQL.
                        logger.warning("local copy of the recent months: %s %s not written: %s", table, month, failed)
                        continue
                    seconds = time.perf_counter() - started
                    written.append(f"{table} {_month_name(month)}: {rows:,} rows in {seconds:.1f} s")
                    logger.info("local copy of the recent months: %s", written[-1])
    _delete(lambda copy: copy not in current)
    return written


def _recent(source: str, newest: dt.datetime) -> list[dt.datetime | dt.date]:
    """The LOCAL_MONTHS months of hours (LOCAL_DAY_MONTHS of the day rollup) to the one holding
    `newest`, as the source stores them: UTC months' first instants, or the first days of
    ROLLUP_TIME_ZONE's local months."""
    if source == "hour":
        last = newest.astimezone(dt.UTC).date().replace(day=1)
    else:
        last = newest.astimezone(ZoneInfo(settings.ROLLUP_TIME_ZONE)).date().replace(day=1)
    found = [last]
    while len(found) < (settings.LOCAL_MONTHS if source == "hour" else settings.LOCAL_DAY_MONTHS):
        found.append((found[-1] - dt.timedelta(days=1)).replace(day=1))
    return [month_start(month) if source == "hour" else month for month in reversed(found)]


def _write(path: Path, *, table: str, kind: AggregateKind, source: str, month, policy: int, versions) -> int:
    """Write a month's copy: a row per place and segment (its dataset versions added), by place
    and segment, decoded a batch at a time into the files, in a directory of its own renamed into
    place once whole. Returns the rows read."""
    key = segment_key_sql(kind.segments)
    packed = "t.published_hours, t.published_values" if source == "hour" else "t.days, t.day_sums, t.day_hours"
    month_type = "timestamptz" if source == "hour" else "date"
    where = (
        f"t.month = %(month)s::{month_type} AND t.policy_id = %(policy)s"
        " AND t.dataset_version_id = ANY(%(versions)s::int[])"
    )
    params = {"month": month.isoformat(), "policy": policy, "versions": [version for version, _ in versions]}
    width, value_type = (HOURS_PER_ROW, np.int32) if source == "hour" else (DAYS_PER_ROW, np.int64)
    building = path.with_name(f".{path.name}.{os.getpid()}.partial")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    try:
        with transaction.atomic(), psycopg.Cursor(connection.connection) as counter:
            (rows,) = counter.execute(f"SELECT count(*) FROM {table} t WHERE {where}", params).fetchone()
            place = np.empty(rows, dtype=np.int64)
            segment = np.empty(rows, dtype=np.int64)
            values, counts = (
                np.lib.format.open_memmap(building / f"{name}.npy", mode="w+", dtype=dtype, shape=(rows, width))
                for name, dtype in (("values", value_type), ("counts", np.uint8))
            )
            read = at = 0  # rows read, rows written
            with psycopg.ServerCursor(connection.connection, "footfall_local_month") as cursor:
                cursor.execute(
                    f"SELECT t.{kind.place_key}, {key}, {packed} FROM {table} t WHERE {where}"
                    f" ORDER BY t.{kind.place_key}, {key}, t.dataset_version_id",
                    params,
                    binary=True,
                )
                while batch := cursor.fetchmany(_BATCH_ROWS):
                    columns = list(zip(*batch, strict=True))
                    read += len(batch)
                    keys = tuple(np.fromiter(column, np.int64, len(batch)) for column in columns[:2])
                    decoded = hourly_rows(*columns[2:]) if source == "hour" else daily_rows(*columns[2:])
                    # A place's segment once: its dataset versions (weekly loads) added, as a read adds them.
                    (batch_place, batch_segment), batch_values, batch_counts = versions_added(keys, *decoded)
                    if at and (batch_place[0], batch_segment[0]) == (place[at - 1], segment[at - 1]):
                        values[at - 1] += batch_values[0]  # its versions began in the batch before
                        counts[at - 1] += batch_counts[0]
                        batch_place, batch_segment = batch_place[1:], batch_segment[1:]
                        batch_values, batch_counts = batch_values[1:], batch_counts[1:]
                    stop = at + len(batch_place)
                    place[at:stop], segment[at:stop] = batch_place, batch_segment
                    values[at:stop], counts[at:stop] = batch_values, batch_counts
                    at = stop
        if read != rows:  # a release's rows never change: retention dropped the month meanwhile
            raise MonthChanged(f"{table} {_month_name(month)}: {read:,} rows read of {rows:,} counted")
        values.flush()
        counts.flush()
        if at < rows:  # versions added: the files hold the rows written only
            for name, array in (("values", values), ("counts", counts)):
                np.save(building / f"{name}.whole.npy", array[:at])
                (building / f"{name}.whole.npy").replace(building / f"{name}.npy")
        del values, counts
        places, firsts = np.unique(place[:at], return_index=True)
        np.save(building / "place.npy", places)
        np.save(building / "bounds.npy", np.append(firsts, at).astype(np.int64))
        np.save(building / "segment.npy", segment[:at])
        try:
            building.rename(path)
        except OSError:  # another writer's copy of the same key is there: the same rows
            shutil.rmtree(building, ignore_errors=True)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return read


def _delete(unwanted) -> int:
    """Delete the copies of this database that unwanted(path) says to, and the parts left by a
    writer that stopped more than an hour ago. Returns how many copies."""
    root = database_dir()
    deleted = 0
    if not root.exists():
        return 0
    for table in root.iterdir():
        if table.name in (_CELLS, _AREAS):
            continue
        for month in table.iterdir():
            for copy in month.iterdir():
                if copy.name.startswith("."):
                    if time.time() - copy.stat().st_mtime > 3600:
                        shutil.rmtree(copy, ignore_errors=True)
                elif unwanted(copy):
                    shutil.rmtree(copy, ignore_errors=True)
                    deleted += 1
            if not any(month.iterdir()):
                month.rmdir()
    return deleted


def forget_months_before(cut: dt.date) -> int:
    """Delete the copies of every month that starts on or before `cut` (retention's: the months
    it dropped, and the day rollup's month it trimmed), whatever their key. Returns how many."""
    if not enabled():
        return 0
    return _delete(lambda copy: copy.parent.name <= _month_name(cut))


def cells_in_span(state: tuple, span: tuple[int, int, int, int]) -> np.ndarray | None:
    """The ids of the grid's cells in the span (first and last row, first and last column),
    ascending, as insights.selectors.cells_in_span reads them, from the node's copy of the grid
    under the catalogue's state (cells are added by release builds only, which change it); None
    if the node has no copy under it."""
    if not enabled():
        return None
    key = (settings.LOCAL_MONTHS_DIR, settings.DATABASES["default"]["NAME"], state)
    cells = _CELL_COPIES.get(key)
    if cells is None:
        try:
            cells = np.asarray(np.load(database_dir() / _CELLS / f"{_state_name(state)}.npy", mmap_mode="r"))
        except FileNotFoundError:
            return None
        except OSError as exc:  # a cache: a report that cannot read it reads the database
            logger.warning("local copy of the grid's cells could not be read (%s)", exc)
            return None
        _CELL_COPIES.clear()  # one state at a time
        _CELL_COPIES[key] = cells
    first_row, last_row, first_column, last_column = span
    rows = np.arange(first_row, last_row + 1, dtype=np.int64) * ROW
    starts = np.searchsorted(cells, rows + first_column)
    stops = np.searchsorted(cells, rows + last_column, side="right")
    return np.concatenate([cells[start:stop] for start, stop in zip(starts.tolist(), stops.tolist(), strict=True)])


_CELLS = "cells"
_CELL_COPIES: dict[tuple, np.ndarray] = {}


@functools.lru_cache(maxsize=4)
def _state_name(state: tuple) -> str:
    return hashlib.blake2b(repr(state).encode(), digest_size=16).hexdigest()


def _write_cells(state: tuple) -> None:
    """Write the grid's cell ids under the catalogue's state, if they were read under it (the
    state asked again after them), and delete the copies under other states."""
    directory = database_dir() / _CELLS
    path = directory / f"{_state_name(state)}.npy"
    if not path.exists():
        with psycopg.Cursor(connection.connection) as cursor:
            (ids,) = cursor.execute(
                "SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM insights_cell", binary=True
            ).fetchone()
        if release_state() != state:
            return  # a release landed meanwhile: its own write makes its copy
        directory.mkdir(parents=True, exist_ok=True)
        building = directory / f".{path.name}.{os.getpid()}.partial"
        with building.open("wb") as out:
            np.save(out, np.array(ids, dtype=np.int64))
        building.rename(path)
    for other in directory.iterdir():
        if other != path and time.time() - other.stat().st_mtime > (3600 if other.name.startswith(".") else 0):
            other.unlink(missing_ok=True)
    _forget_other_states(state)


_AREAS = "areas"


def area_mark(state: tuple, digest: bytes) -> Path | None:
    """Where the node records that its workers shared the area (insights/areas.py, by its key's
    digest) under the catalogue's state; None if the node keeps no copy (nor record)."""
    return database_dir() / _AREAS / _state_name(state) / digest.hex() if enabled() else None


def area_may_be_shared(mark: Path | None) -> bool:
    """Whether the node's workers may have shared the area: False only if the node keeps a
    record and it holds no mark for it."""
    return mark is None or mark.exists()


def mark_area_shared(mark: Path | None) -> None:
    """Record that the area was shared (once its entry is written). A mark that cannot be
    written leaves the area to be weighed again by a worker that does not hold it: logged once."""
    if mark is None:
        return
    try:
        mark.parent.mkdir(parents=True, exist_ok=True)
        mark.touch()
    except OSError as exc:
        global _warned_unmarked
        if not _warned_unmarked:
            logger.warning("the record of the areas shared could not be written (%s): areas are weighed again", exc)
            _warned_unmarked = True


_warned_unmarked = False  # a mark could not be written: logged once a process


def _forget_other_states(state: tuple) -> None:
    """Delete the record of the areas shared under other states than the catalogue's."""
    with contextlib.suppress(FileNotFoundError):
        for other in (database_dir() / _AREAS).iterdir():
            if other.name != _state_name(state):
                shutil.rmtree(other, ignore_errors=True)


def forget_area_marks() -> None:
    """Delete the record of the areas shared from this database (the shared areas forgotten)."""
    if enabled():
        shutil.rmtree(database_dir() / _AREAS, ignore_errors=True)
