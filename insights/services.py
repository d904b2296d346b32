"""Writes of the data side: loading aggregate batches."""

import datetime as dt
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from insights.ingest import (
    MAX_LISTED_ERRORS,
    LoadRejected,
    PresenceReader,
    day_sums_csv,
    presence_csv,
    staging_csv,
)
from insights.models import DatasetVersion, RetentionMark

__all__ = ["LoadRejected", "LoadSummary", "RetentionSummary", "presence_load", "presence_retain", "retention_cutoff"]

COPY_PRESENCE = (
    "COPY {table} (cell_id, hour, age_band, gender, visits, dataset_version_id) FROM STDIN (FORMAT csv{options})"
)
# Sorting a month's primary key in memory rather than on disk.
INDEX_BUILD_MEMORY = "512MB"
PRESENCE_KEY = "cell_id, hour, age_band, gender"


@dataclass(frozen=True)
class LoadSummary:
    version: int
    rows: int
    cells: int
    period_start: dt.datetime
    period_end: dt.datetime
    duration_seconds: float
    already_loaded: bool


def presence_load(*, path: Path, on_progress: Callable[[int], None] | None = None) -> LoadSummary:
    """Load a presence file (CSV or Parquet) as a new dataset version, all or nothing.

    Loading a file whose content was loaded before is a no-op that returns that version.
    """
    sha256 = _file_sha256(path)
    existing = DatasetVersion.objects.filter(kind=DatasetVersion.Kind.PRESENCE, sha256=sha256).first()
    if existing:
        return _summary(existing, already_loaded=True)

    started = time.monotonic()
    reader = PresenceReader(path, rollup_time_zone=settings.ROLLUP_TIME_ZONE)
    try:
        with transaction.atomic():
            version, new_partitions = _load_presence(reader, sha256, on_progress)
            version.duration_seconds = time.monotonic() - started
            version.save(update_fields=["duration_seconds"])
    except IntegrityError:
        errors, total = _duplicate_lines(path)
        raise LoadRejected(errors, total) from None
    with connection.cursor() as cursor:
        for partition in new_partitions:
            cursor.execute(f"ANALYZE {partition}")
        cursor.execute("ANALYZE insights_presence")
        cursor.execute("ANALYZE insights_presenceday")
        cursor.execute("ANALYZE insights_presenceweek")
    return _summary(version, already_loaded=False)


def _load_presence(reader: PresenceReader, sha256: str, on_progress) -> tuple[DatasetVersion, list[str]]:
    """COPY each month: a month seen for the first time goes to a fresh table that gets its
    primary key after the rows are in (much faster than maintaining it) and is then attached."""
    placeholder = timezone.now()
    version = DatasetVersion.objects.create(
        kind=DatasetVersion.Kind.PRESENCE,
        source=reader.path.name,
        sha256=sha256,
        rows=0,
        cells=0,
        period_start=placeholder,
        period_end=placeholder,
        duration_seconds=0.0,
    )
    with connection.cursor() as cursor:
        attached = _presence_partitions(cursor)
        new_months: list[dt.date] = []
        cursor.execute("DROP TABLE IF EXISTS day_sums")  # ON COMMIT DROP does not fire in an enclosing transaction
        cursor.execute(
            "CREATE TEMP TABLE day_sums (cell_id bigint, day date, age_band smallint, gender smallint, visits bigint)"
            " ON COMMIT DROP"
        )
        for batch in reader.batches():
            for month, rows in batch.by_month.items():
                with connection.wrap_database_errors, cursor.copy("COPY day_sums FROM STDIN (FORMAT csv)") as copy:
                    copy.write(day_sums_csv(rows))
                if month not in attached and month not in new_months:
                    cursor.execute(f"CREATE TABLE {_partition(month)} (LIKE insights_presence INCLUDING CONSTRAINTS)")
                    new_months.append(month)
                # A table created in this transaction can take its rows already frozen.
                fresh = month in new_months
                statement = COPY_PRESENCE.format(
                    table=_partition(month) if fresh else "insights_presence", options=", FREEZE" if fresh else ""
                )
                # COPY bypasses Django's cursor wrapper: translate psycopg's errors as execute() would.
                with connection.wrap_database_errors, cursor.copy(statement) as copy:
                    copy.write(presence_csv(rows, version.pk))
            if on_progress:
                on_progress(reader.rows)
        cursor.execute(f"SET LOCAL maintenance_work_mem = '{INDEX_BUILD_MEMORY}'")
        for month in new_months:
            cursor.execute(f"ALTER TABLE {_partition(month)} ADD PRIMARY KEY ({PRESENCE_KEY})")
            cursor.execute(
                f"ALTER TABLE insights_presence ATTACH PARTITION {_partition(month)} FOR VALUES FROM (%s) TO (%s)",
                [_month_start(month), _month_start(_next_month(month))],
            )
        _insert_cells(cursor, reader.cell_ids)
        _roll_up(cursor, version=version.pk)
    version.rows = reader.rows
    version.cells = len(reader.cell_ids)
    version.period_start = reader.first_hour
    version.period_end = reader.last_hour + dt.timedelta(hours=1)
    version.save(update_fields=["rows", "cells", "period_start", "period_end"])
    return version, [_partition(month) for month in new_months]


def _roll_up(cursor, *, version: int) -> None:
    """Combine the batches' day sums into local days, and those days into local weeks."""
    cursor.execute(
        "INSERT INTO insights_presenceday (cell_id, day, age_band, gender, dataset_version_id, visits)"
        " SELECT cell_id, day, age_band, gender, %(version)s, sum(visits) FROM day_sums GROUP BY 1, 2, 3, 4",
        {"version": version},
    )
    cursor.execute(
        "INSERT INTO insights_presenceweek (cell_id, week, age_band, gender, dataset_version_id, visits)"
        " SELECT cell_id, date_trunc('week', day)::date, age_band, gender, dataset_version_id, sum(visits)"
        " FROM insights_presenceday WHERE dataset_version_id = %(version)s"
        " GROUP BY 1, 2, 3, 4, 5",
        {"version": version},
    )


@dataclass(frozen=True)
class RetentionSummary:
    dropped_months: list[dt.date]
    retained_from: dt.datetime | None


def retention_cutoff() -> dt.datetime:
    return timezone.now() - dt.timedelta(days=settings.DATA_RETENTION_DAYS)


def presence_retain(*, before: dt.datetime) -> RetentionSummary:
    """Drop every whole UTC month of presence that ends on or before `before`, with the
    rollup days and weeks that started before the first hour kept."""
    with transaction.atomic(), connection.cursor() as cursor:
        old_months = sorted(
            month for month in _presence_partitions(cursor) if _month_start(_next_month(month)) <= before
        )
        if not old_months:
            mark = RetentionMark.objects.filter(kind=DatasetVersion.Kind.PRESENCE).first()
            return RetentionSummary(dropped_months=[], retained_from=mark.retained_from if mark else None)
        for month in old_months:
            cursor.execute(f"DROP TABLE {_partition(month)}")
        retained_from = _month_start(_next_month(old_months[-1]))
        # A rollup day or week that began before the cut holds hours that are gone.
        for table, column in (("insights_presenceday", "day"), ("insights_presenceweek", "week")):
            cursor.execute(
                f"DELETE FROM {table} WHERE ({column}::timestamp AT TIME ZONE %(zone)s) < %(cut)s",
                {"zone": settings.ROLLUP_TIME_ZONE, "cut": retained_from},
            )
        RetentionMark.objects.update_or_create(
            kind=DatasetVersion.Kind.PRESENCE, defaults={"retained_from": retained_from}
        )
    return RetentionSummary(dropped_months=old_months, retained_from=retained_from)


def _presence_partitions(cursor) -> set[dt.date]:
    cursor.execute(
        "SELECT child.relname FROM pg_inherits JOIN pg_class child ON child.oid = pg_inherits.inhrelid"
        " WHERE pg_inherits.inhparent = 'insights_presence'::regclass"
    )
    return {
        dt.datetime.strptime(name.removeprefix("insights_presence_p"), "%Y%m").date() for (name,) in cursor.fetchall()
    }


def _partition(month: dt.date) -> str:
    return f"insights_presence_p{month:%Y%m}"


def _month_start(month: dt.date) -> dt.datetime:
    return dt.datetime(month.year, month.month, 1, tzinfo=dt.UTC)


def _next_month(month: dt.date) -> dt.date:
    return dt.date(month.year + month.month // 12, month.month % 12 + 1, 1)


def _insert_cells(cursor, cells: dict[int, tuple[str, int, int]]) -> None:
    ids = list(cells)
    cursor.execute(
        "INSERT INTO insights_cell (id, code, geometry)"
        " SELECT id, code, ST_MakeEnvelope(easting, northing, easting + %(res)s, northing + %(res)s, 3035)"
        " FROM unnest(%(ids)s::bigint[], %(codes)s::text[], %(northings)s::int[], %(eastings)s::int[])"
        "   AS t(id, code, northing, easting)"
        " ON CONFLICT (id) DO NOTHING",
        {
            "res": settings.GRID_RESOLUTION_M,
            "ids": ids,
            "codes": [cells[i][0] for i in ids],
            "northings": [cells[i][1] for i in ids],
            "eastings": [cells[i][2] for i in ids],
        },
    )


def _duplicate_lines(path: Path) -> tuple[list[str], int]:
    """Explain a refused load: rows repeated in the file, or rows already loaded earlier."""
    with transaction.atomic(), connection.cursor() as cursor:
        # Dropped first too: ON COMMIT DROP does not fire inside an enclosing transaction.
        cursor.execute("DROP TABLE IF EXISTS presence_staging")
        cursor.execute(
            "CREATE TEMP TABLE presence_staging (line integer, cell_id bigint, hour timestamptz,"
            " age_band smallint, gender smallint) ON COMMIT DROP"
        )
        for batch in PresenceReader(path).batches():
            for rows in batch.by_month.values():
                with cursor.copy("COPY presence_staging FROM STDIN (FORMAT csv)") as copy:
                    copy.write(staging_csv(rows))
        cursor.execute(
            f"SELECT min(line), max(line) FROM presence_staging GROUP BY {PRESENCE_KEY} HAVING count(*) > 1 ORDER BY 1"
        )
        errors = [
            (last, f"line {last}: repeats line {first} (same cell, hour, age_band, gender)")
            for first, last in cursor.fetchall()
        ]
        cursor.execute(
            "SELECT s.line, p.dataset_version_id FROM presence_staging s"
            f" JOIN insights_presence p USING ({PRESENCE_KEY})"
        )
        errors += [
            (line, f"line {line}: already loaded in dataset version {version}") for line, version in cursor.fetchall()
        ]
    errors.sort()
    return [message for _, message in errors[:MAX_LISTED_ERRORS]], len(errors)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as content:
        for block in iter(lambda: content.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _summary(version: DatasetVersion, *, already_loaded: bool) -> LoadSummary:
    return LoadSummary(
        version=version.pk,
        rows=version.rows,
        cells=version.cells,
        period_start=version.period_start,
        period_end=version.period_end,
        duration_seconds=version.duration_seconds,
        already_loaded=already_loaded,
    )
