"""Writes of the data side: loading aggregate batches, and dropping old ones."""

import datetime as dt
import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from django.conf import settings
from django.contrib.gis.geos import GEOSException, GEOSGeometry, MultiPolygon
from django.db import connection, transaction
from django.utils import timezone

from insights import local_months, shared
from insights.ingest import (
    MAX_LISTED_ERRORS,
    CellHourReader,
    LoadRejected,
    read_ahead,
    split_by_month,
    staging_csv,
)
from insights.kinds import DWELL, HOME, KINDS, PRESENCE, TRIPS, AggregateKind
from insights.loaded import in_key_order, key_columns, packed_binary, whole_days
from insights.models import DatasetVersion, Region, Release, RetentionMark
from insights.partitions import attach_days, month_start, next_month, partition, partitions
from insights.releases import (
    release_analyze,
    release_build,
    release_policy_of_settings,
    released_table,
    releases_landed,
)
from insights.repeats import RepeatCheck
from insights.selectors import current_release_policy

__all__ = [
    "LoadRejected",
    "LoadSummary",
    "RetentionSummary",
    "aggregates_load",
    "dwell_load",
    "aggregates_retain",
    "presence_load",
    "home_load",
    "trips_load",
    "regions_load",
    "retention_cutoff",
]


@dataclass(frozen=True)
class LoadSummary:
    version: int
    rows: int
    cells: int
    period_start: dt.datetime
    period_end: dt.datetime
    duration_seconds: float
    already_loaded: bool
    release: Release | None  # built with the load; None when the file was loaded before


def aggregates_load(
    *,
    kind: AggregateKind,
    path: Path,
    manifest: dict | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> LoadSummary:
    """Load a file of one kind (CSV or Parquet) as a new dataset version, all or nothing.
    manifest: what the operator's pipeline says of the file, kept with the version.

    Loading a file whose content was loaded before is a no-op that returns that version.
    """
    sha256 = file_sha256(path)
    existing = DatasetVersion.objects.filter(kind=kind.name, sha256=sha256).first()
    if existing:
        return _summary(existing, already_loaded=True)

    started = time.monotonic()
    reader = CellHourReader(path, kind=kind)
    in_force = current_release_policy()
    try:
        with transaction.atomic():
            version, new_partitions = _load(reader, sha256, on_progress)
            version.duration_seconds = time.monotonic() - started
            version.manifest = manifest or {}
            version.save(update_fields=["duration_seconds", "manifest"])
            # Loaded and released together: no report can see a version without its release.
            release = release_build(version=version, policy=release_policy_of_settings())
            built = [release]
            if in_force and in_force != release.policy:
                # The settings' policy waits for build_releases; reports read this one till then.
                built.append(release_build(version=version, policy=in_force))
    except RepeatedRows:
        errors, total = _duplicate_lines(kind, path)
        raise LoadRejected(errors, total) from None
    with connection.cursor() as cursor:
        for table in [*new_partitions, kind.raw_table]:
            cursor.execute(f"ANALYZE {table}")
    release_analyze(kind=kind)
    releases_landed(built)
    return _summary(version, already_loaded=False, release=release)


presence_load = partial(aggregates_load, kind=PRESENCE)
dwell_load = partial(aggregates_load, kind=DWELL)
home_load = partial(aggregates_load, kind=HOME)
trips_load = partial(aggregates_load, kind=TRIPS)


class RepeatedRows(Exception):
    """A key (place, hour, segments) is in the file twice, or was loaded before."""


def _load(reader: CellHourReader, sha256: str, on_progress) -> tuple[DatasetVersion, list[str]]:
    """COPY the values packed by place and day (insights/loaded.py), a month seen for the first
    time to a fresh table, attached when its rows are in. Nothing keys the packed rows:
    insights/repeats.py says how a repeated key is found instead."""
    kind = reader.kind
    placeholder = timezone.now()
    version = DatasetVersion.objects.create(
        kind=kind.name,
        source=reader.path.name,
        sha256=sha256,
        rows=0,
        cells=0,
        period_start=placeholder,
        period_end=placeholder,
        duration_seconds=0.0,
    )
    columns = ", ".join([kind.place_key, "day", *kind.segments, "dataset_version_id", "hours", "counts"])
    copy_rows = f"COPY {{table}} ({columns}) FROM STDIN (FORMAT binary{{options}})"
    repeats = RepeatCheck(key_columns(kind))
    with connection.cursor() as cursor:
        # One load of a kind at a time, so that each checks the rows of the one before it.
        cursor.execute(f"LOCK TABLE {kind.raw_table} IN SHARE ROW EXCLUSIVE MODE")
        attached = partitions(cursor, kind.raw_table)
        new_months: list[dt.date] = []
        pieces = (rows for by_month in reader.batches() for rows in by_month.values())
        # The next rows are read, checked, packed and encoded in a thread while these are copied.
        payloads = (_packed_months(kind, days, version, repeats) for days in whole_days(pieces))
        for batch in read_ahead(payloads):
            for month, rows in batch:
                table = partition(kind.raw_table, month)
                if month not in attached and month not in new_months:
                    # The check is the partition's bound, so attaching it need not scan its rows.
                    cursor.execute(
                        f"CREATE TABLE {table} (LIKE {kind.raw_table} INCLUDING CONSTRAINTS,"
                        " CHECK (day >= %s AND day < %s))",
                        [month, next_month(month)],
                    )
                    new_months.append(month)
                # A table created in this transaction can take its rows already frozen.
                fresh = month in new_months
                statement = copy_rows.format(table=table, options=", FREEZE" if fresh else "")
                # COPY bypasses Django's cursor wrapper: translate psycopg's errors as execute() would.
                with connection.wrap_database_errors, cursor.copy(statement) as copy:
                    copy.write(rows)
            if on_progress:
                on_progress(reader.rows)
        for month in new_months:
            attach_days(cursor, kind.raw_table, month)
        version.rows = reader.rows
        version.cells = len(reader.cell_ids) if kind.in_grid else len(reader.zone_ids)
        version.period_start = reader.first_hour
        version.period_end = reader.last_hour + dt.timedelta(hours=1)
        version.save(update_fields=["rows", "cells", "period_start", "period_end"])
        if _repeated_in_database(cursor, kind, version, repeats.unordered_hours):
            raise RepeatedRows
    return version, [partition(kind.raw_table, month) for month in new_months]


def _packed_months(kind: AggregateKind, days, version: DatasetVersion, repeats: RepeatCheck) -> list:
    rows = in_key_order(kind, days)
    repeats.add(rows)
    if repeats.repeated:
        raise RepeatedRows
    return [(month, packed_binary(kind, part, version.pk)) for month, part in split_by_month(rows).items()]


# Bounds on the packed rows' day, written into the statement so that only the partitions of
# those days are read (the view's hour is computed, and prunes nothing).
_DAYS = "day BETWEEN %s AND %s"


def _repeated_in_database(cursor, kind: AggregateKind, version: DatasetVersion, unordered_hours: list) -> bool:
    """What the reader could not rule out: keys repeated in hours that the file's batches share
    out of time order, and keys loaded before in hours that an earlier version's period shares."""
    for first, last in _merged(unordered_hours):
        cursor.execute(
            f"SELECT EXISTS (SELECT FROM {kind.table} WHERE dataset_version_id = %s AND {_DAYS}"
            f" AND hour BETWEEN %s AND %s GROUP BY {kind.key} HAVING count(*) > 1)",
            [version.pk, first.date(), last.date(), first, last],
        )
        if cursor.fetchone()[0]:
            return True
    overlapping = DatasetVersion.objects.filter(
        kind=kind.name, period_start__lt=version.period_end, period_end__gt=version.period_start
    ).exclude(pk=version.pk)
    for earlier in overlapping:
        start, end = max(earlier.period_start, version.period_start), min(earlier.period_end, version.period_end)
        cursor.execute(
            f"SELECT EXISTS (SELECT FROM {kind.table} n JOIN {kind.table} e USING ({kind.key})"
            f" WHERE n.dataset_version_id = %s AND e.dataset_version_id = %s AND n.{_DAYS} AND e.{_DAYS}"
            " AND n.hour >= %s AND n.hour < %s)",
            [version.pk, earlier.pk, start.date(), end.date(), start.date(), end.date(), start, end],
        )
        if cursor.fetchone()[0]:
            return True
    return False


def _merged(spans: list[tuple]) -> list[tuple]:
    merged: list[list] = []
    for first, last in sorted(spans):
        if merged and first <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    return [tuple(span) for span in merged]


REGION_CODE = re.compile(r"^[A-Za-z0-9_-]{1,20}$")


@dataclass(frozen=True)
class RegionsSummary:
    created: int
    updated: int


def regions_load(*, path: Path) -> RegionsSummary:
    """Load home regions / zones from a GeoJSON FeatureCollection (EPSG:4326), all or nothing.

    A region already loaded (same code) takes the new name and boundary; its id, which the
    aggregate tables store, stays.
    """
    try:
        collection = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LoadRejected([f"not a GeoJSON file: {exc}"], 1) from None
    features = collection.get("features") if isinstance(collection, dict) else None
    if collection.get("type") != "FeatureCollection" or not isinstance(features, list) or not features:
        raise LoadRejected(["expected a GeoJSON FeatureCollection with at least one feature"], 1)
    regions, errors = {}, []
    for number, feature in enumerate(features, start=1):
        try:
            code, name, geometry = _region(feature, seen=regions)
        except ValueError as exc:
            errors.append(f"feature {number}: {exc}")
            continue
        regions[code] = (name, geometry)
    if errors:
        raise LoadRejected(errors[:MAX_LISTED_ERRORS], len(errors))
    with transaction.atomic():
        existing = set(Region.objects.filter(code__in=regions).values_list("code", flat=True))
        for code, (name, geometry) in regions.items():
            Region.objects.update_or_create(code=code, defaults={"name": name, "geometry": geometry})
    return RegionsSummary(created=len(regions) - len(existing), updated=len(existing))


def _region(feature, *, seen: dict) -> tuple[str, str, MultiPolygon]:
    properties = feature.get("properties") if isinstance(feature, dict) else None
    if not isinstance(properties, dict):
        raise ValueError("a feature needs properties with a code and a name")
    code, name = properties.get("code"), properties.get("name")
    if not isinstance(code, str) or not REGION_CODE.match(code):
        raise ValueError(f"code must be 1-20 letters, digits, '-' or '_', got {code!r}")
    if code in seen:
        raise ValueError(f"code {code!r} appears twice")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"region {code} needs a name")
    try:
        geometry = GEOSGeometry(json.dumps(feature.get("geometry")), srid=4326)
    except (GEOSException, ValueError, TypeError):
        raise ValueError(f"region {code} has no readable GeoJSON geometry") from None
    if geometry.geom_type == "Polygon":
        geometry = MultiPolygon(geometry, srid=4326)
    if geometry.geom_type != "MultiPolygon" or not geometry.valid or geometry.empty:
        raise ValueError(f"region {code} needs a valid Polygon or MultiPolygon, got {geometry.geom_type}")
    geometry.transform(3035)
    return code, name.strip(), geometry


@dataclass(frozen=True)
class RetentionSummary:
    dropped_months: list[dt.date]
    retained_from: dt.datetime | None


def retention_cutoff() -> dt.datetime:
    return timezone.now() - dt.timedelta(days=settings.DATA_RETENTION_DAYS)


def aggregates_retain(*, before: dt.datetime) -> dict[str, RetentionSummary]:
    """Drop every whole UTC month that ends on or before `before`, of every kind, with the
    rollup days that started before the first hour kept, and the node's copies of them
    (insights/shared.py, insights/local_months.py)."""
    summaries = {name: _retain(kind, before=before) for name, kind in KINDS.items()}
    cuts = [summary.retained_from for summary in summaries.values() if summary.dropped_months]
    if cuts:
        # The node's copies of what was dropped go too: its shared months (a warm-up's live for
        # days) and its copy of the recent months (keyed by the old mark, so never read again).
        shared.forget_months_before(max(cuts).date())
        local_months.forget_months_before(max(cuts).date())
    return summaries


def _retain(kind: AggregateKind, *, before: dt.datetime) -> RetentionSummary:
    with transaction.atomic(), connection.cursor() as cursor:
        old_months = sorted(
            month for month in partitions(cursor, kind.raw_table) if month_start(next_month(month)) <= before
        )
        if not old_months:
            mark = RetentionMark.objects.filter(kind=kind.name).first()
            return RetentionSummary(dropped_months=[], retained_from=mark.retained_from if mark else None)
        released_months = partitions(cursor, released_table(kind))
        for month in old_months:
            cursor.execute(f"DROP TABLE {partition(kind.raw_table, month)}")
            if month in released_months:
                cursor.execute(f"DROP TABLE {partition(released_table(kind), month)}")
        retained_from = month_start(next_month(old_months[-1]))
        # A rollup day that began before the cut holds hours that are gone: a packed month loses
        # its leading days (insights/packing.py), and is deleted when none is left.
        day_table = f"{released_table(kind)}_day"
        before_cut = "((month + {day})::timestamp AT TIME ZONE %(zone)s) < %(cut)s"
        cursor.execute(
            f"UPDATE {day_table} t SET days = substring(t.days FROM cut.days + 1),"
            f" day_sums = substring(t.day_sums FROM 8 * cut.days + 1),"
            f" day_hours = substring(t.day_hours FROM cut.days + 1)"
            f" FROM (SELECT ctid AS row, (SELECT count(*) FROM generate_series(0, length(days) - 1) i"
            f"        WHERE {before_cut.format(day='get_byte(days, i)')})::int AS days"
            f"       FROM {day_table} WHERE {before_cut.format(day='0')}) cut"
            f" WHERE t.ctid = cut.row AND cut.days > 0",
            {"zone": settings.ROLLUP_TIME_ZONE, "cut": retained_from},
        )
        cursor.execute(f"DELETE FROM {day_table} WHERE length(days) = 0")
        RetentionMark.objects.update_or_create(kind=kind.name, defaults={"retained_from": retained_from})
    return RetentionSummary(dropped_months=old_months, retained_from=retained_from)


def _duplicate_lines(kind: AggregateKind, path: Path) -> tuple[list[str], int]:
    """Explain a refused load: rows repeated in the file, or rows already loaded earlier."""
    segments = ", ".join(f"{name} smallint" for name in kind.segments)
    with transaction.atomic(), connection.cursor() as cursor:
        # Dropped first too: ON COMMIT DROP does not fire inside an enclosing transaction.
        cursor.execute("DROP TABLE IF EXISTS staging")
        cursor.execute(
            f"CREATE TEMP TABLE staging (line integer, {kind.place_key} bigint, hour timestamptz, {segments})"
            " ON COMMIT DROP"
        )
        for by_month in CellHourReader(path, kind=kind).batches():
            for rows in by_month.values():
                with cursor.copy("COPY staging FROM STDIN (FORMAT csv)") as copy:
                    copy.write(staging_csv(kind, rows))
        cursor.execute(f"SELECT min(line), max(line) FROM staging GROUP BY {kind.key} HAVING count(*) > 1 ORDER BY 1")
        same = ", ".join([kind.place, "hour", *kind.segments])
        errors = [(last, f"line {last}: repeats line {first} (same {same})") for first, last in cursor.fetchall()]
        cursor.execute("SELECT min(hour), max(hour) FROM staging")
        first, last = cursor.fetchone()
        cursor.execute(
            f"SELECT s.line, t.dataset_version_id FROM staging s JOIN {kind.table} t USING ({kind.key})"
            f" WHERE t.{_DAYS}",
            [first.date(), last.date()],
        )
        errors += [
            (line, f"line {line}: already loaded in dataset version {version}") for line, version in cursor.fetchall()
        ]
    errors.sort()
    return [message for _, message in errors[:MAX_LISTED_ERRORS]], len(errors)


def file_sha256(path: Path) -> str:
    """The file's SHA-256, read a megabyte at a time: what a dataset version is known by."""
    digest = hashlib.sha256()
    with path.open("rb") as content:
        for block in iter(lambda: content.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _summary(version: DatasetVersion, *, already_loaded: bool, release: Release | None = None) -> LoadSummary:
    return LoadSummary(
        release=release,
        version=version.pk,
        rows=version.rows,
        cells=version.cells,
        period_start=version.period_start,
        period_end=version.period_end,
        duration_seconds=version.duration_seconds,
        already_loaded=already_loaded,
    )
