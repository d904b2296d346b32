"""Writes of the data side: loading aggregate batches."""

import datetime as dt
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, connection, transaction

from insights.grid import InvalidCellCode, cell_corner
from insights.models import DatasetVersion

PRESENCE_HEADER = "cell,hour,age_band,gender,visits"
AGE_BANDS = frozenset({"18-24", "25-34", "35-44", "45-54", "55-64", "65+", "*"})
GENDERS = frozenset({"f", "m", "*"})
MAX_LISTED_ERRORS = 20
MAX_VISITS = 2**31 - 1
COPY_BATCH_LINES = 20_000
PROGRESS_EVERY_LINES = 200_000


class LoadRejected(Exception):
    """The file was not loaded at all; `errors` names its first bad lines."""

    def __init__(self, errors: list[str], total: int):
        self.errors = errors
        self.total = total
        more = f" (and {total - len(errors)} more)" if total > len(errors) else ""
        super().__init__(f"{total} bad line(s){more}:\n" + "\n".join(errors))


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
    """Load a presence CSV as a new dataset version, all or nothing.

    Loading a file whose content was loaded before is a no-op that returns that version.
    """
    sha256 = _file_sha256(path)
    existing = DatasetVersion.objects.filter(kind=DatasetVersion.Kind.PRESENCE, sha256=sha256).first()
    if existing:
        return _summary(existing, already_loaded=True)

    started = time.monotonic()
    with transaction.atomic(), connection.cursor() as cursor:
        # Dropped first too: ON COMMIT DROP does not fire inside an enclosing transaction.
        cursor.execute("DROP TABLE IF EXISTS presence_staging")
        cursor.execute(
            "CREATE TEMP TABLE presence_staging (line integer, cell_code text, hour timestamptz,"
            " age_band text, gender text, visits integer) ON COMMIT DROP"
        )
        parsed = _copy_validated_presence(cursor, path, on_progress)
        _insert_cells(cursor, parsed.cell_corners)
        version = DatasetVersion.objects.create(
            kind=DatasetVersion.Kind.PRESENCE,
            source=path.name,
            sha256=sha256,
            rows=parsed.rows,
            cells=len(parsed.cell_corners),
            period_start=parsed.first_hour,
            period_end=parsed.last_hour + dt.timedelta(hours=1),
            duration_seconds=0.0,
        )
        try:
            with transaction.atomic():
                cursor.execute(
                    "INSERT INTO insights_presence (cell_id, hour, age_band, gender, visits, dataset_version_id)"
                    " SELECT c.id, s.hour, s.age_band, s.gender, s.visits, %s"
                    " FROM presence_staging s JOIN insights_cell c ON c.code = s.cell_code",
                    [version.pk],
                )
        except IntegrityError:
            errors, total = _duplicate_lines(cursor)
            raise LoadRejected(errors, total) from None
        version.duration_seconds = time.monotonic() - started
        version.save(update_fields=["duration_seconds"])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE insights_presence")
    return _summary(version, already_loaded=False)


@dataclass
class _ParsedFile:
    rows: int
    cell_corners: dict[str, tuple[int, int]]
    first_hour: dt.datetime
    last_hour: dt.datetime


def _copy_validated_presence(cursor, path: Path, on_progress) -> _ParsedFile:
    """Validate every line and stream the good ones into the staging table."""
    errors: list[str] = []
    error_total = 0
    cell_corners: dict[str, tuple[int, int]] = {}
    hours: dict[str, dt.datetime] = {}
    rows = 0
    batch: list[str] = []

    def reject(line_number: int, reason: str) -> None:
        nonlocal error_total
        error_total += 1
        if len(errors) < MAX_LISTED_ERRORS:
            errors.append(f"line {line_number}: {reason}")

    with path.open(encoding="utf-8-sig", newline="") as lines, cursor.copy("COPY presence_staging FROM STDIN") as copy:
        header = lines.readline().rstrip("\r\n")
        if header != PRESENCE_HEADER:
            raise LoadRejected([f"line 1: header must be exactly {PRESENCE_HEADER!r}, got {header!r}"], 1)
        for line_number, raw in enumerate(lines, start=2):
            fields = raw.rstrip("\r\n").split(",")
            if len(fields) != 5:
                reject(line_number, f"expected 5 comma-separated fields, got {len(fields)}")
                continue
            code, hour, age_band, gender, visits = fields
            if code not in cell_corners:
                try:
                    cell_corners[code] = cell_corner(code)
                except InvalidCellCode as exc:
                    reject(line_number, str(exc))
                    continue
            if hour not in hours:
                problem = _hour_problem(hour)
                if problem:
                    reject(line_number, problem)
                    continue
                hours[hour] = dt.datetime.fromisoformat(hour)
            if age_band not in AGE_BANDS:
                reject(line_number, f"age_band must be one of {' '.join(sorted(AGE_BANDS))}, got {age_band!r}")
                continue
            if gender not in GENDERS:
                reject(line_number, f"gender must be f, m or *, got {gender!r}")
                continue
            if not (visits.isascii() and visits.isdigit()) or int(visits) > MAX_VISITS:
                reject(line_number, f"visits must be a non-negative integer, got {visits!r}")
                continue
            rows += 1
            if not errors:
                batch.append(f"{line_number}\t{code}\t{hour}\t{age_band}\t{gender}\t{visits}\n")
                if len(batch) >= COPY_BATCH_LINES:
                    copy.write("".join(batch))
                    batch.clear()
            if on_progress and line_number % PROGRESS_EVERY_LINES == 0:
                on_progress(line_number - 1)
        if errors:
            raise LoadRejected(errors, error_total)
        if not rows:
            raise LoadRejected(["the file has a header but no data lines"], 1)
        copy.write("".join(batch))
    if on_progress:
        on_progress(rows)
    return _ParsedFile(
        rows=rows, cell_corners=cell_corners, first_hour=min(hours.values()), last_hour=max(hours.values())
    )


def _hour_problem(hour: str) -> str | None:
    try:
        parsed = dt.datetime.fromisoformat(hour)
    except ValueError:
        return f"hour must be an ISO 8601 UTC time such as 2026-03-29T00:00:00Z, got {hour!r}"
    if parsed.utcoffset() != dt.timedelta(0):
        return f"hour must be in UTC (Z or +00:00), got {hour!r}"
    if (parsed.minute, parsed.second, parsed.microsecond) != (0, 0, 0):
        return f"hour must be the start of an hour, got {hour!r}"
    return None


def _insert_cells(cursor, cell_corners: dict[str, tuple[int, int]]) -> None:
    codes = list(cell_corners)
    cursor.execute(
        "INSERT INTO insights_cell (code, geometry)"
        " SELECT code, ST_MakeEnvelope(easting, northing, easting + %(res)s, northing + %(res)s, 3035)"
        " FROM unnest(%(codes)s::text[], %(northings)s::int[], %(eastings)s::int[]) AS t(code, northing, easting)"
        " ON CONFLICT (code) DO NOTHING",
        {
            "res": settings.GRID_RESOLUTION_M,
            "codes": codes,
            "northings": [cell_corners[code][0] for code in codes],
            "eastings": [cell_corners[code][1] for code in codes],
        },
    )


def _duplicate_lines(cursor) -> tuple[list[str], int]:
    """Explain a failed insert: rows repeated in the file, or rows already loaded earlier."""
    cursor.execute(
        "SELECT min(line), max(line), count(*) FROM presence_staging"
        " GROUP BY cell_code, hour, age_band, gender HAVING count(*) > 1 ORDER BY 1"
    )
    repeated = cursor.fetchall()
    errors = [f"line {last}: repeats line {first} (same cell, hour, age_band, gender)" for first, last, _ in repeated]
    cursor.execute(
        "SELECT s.line, p.dataset_version_id FROM presence_staging s"
        " JOIN insights_cell c ON c.code = s.cell_code"
        " JOIN insights_presence p ON p.cell_id = c.id AND p.hour = s.hour"
        " AND p.age_band = s.age_band AND p.gender = s.gender ORDER BY 1"
    )
    loaded = cursor.fetchall()
    errors += [f"line {line}: already loaded in dataset version {version}" for line, version in loaded]
    errors.sort(key=lambda error: int(error.split(":")[0].removeprefix("line ")))
    return errors[:MAX_LISTED_ERRORS], len(errors)


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
