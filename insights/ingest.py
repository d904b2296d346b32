"""Reading and validating presence files in column batches (pyarrow), CSV or Parquet.

Cell codes, hours and segments repeat on nearly every line, so they are read
dictionary-encoded and each distinct value is checked once per batch; only the lines
that fail are looked at one by one, to say exactly why.
"""

import datetime as dt
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from insights.grid import InvalidCellCode, cell_corner, cell_id
from insights.segments import AGE_BANDS, GENDERS

PRESENCE_COLUMNS = ["cell", "hour", "age_band", "gender", "visits"]
PRESENCE_HEADER = ",".join(PRESENCE_COLUMNS)
MAX_LISTED_ERRORS = 20
MAX_VISITS = 2**31 - 1
BATCH_BYTES = 16 << 20
TEXT = pa.dictionary(pa.int32(), pa.string())
HOUR_TEXT = r"^(?P<hour>\d{4}-\d\d-\d\dT\d\d):00:00(?:Z|\+00:00)$"


class LoadRejected(Exception):
    """The file was not loaded at all; `errors` names its first bad lines."""

    def __init__(self, errors: list[str], total: int):
        self.errors = errors
        self.total = total
        more = f" (and {total - len(errors)} more)" if total > len(errors) else ""
        super().__init__(f"{total} bad line(s){more}:\n" + "\n".join(errors))


@dataclass
class PresenceBatch:
    """Valid rows of one batch, ready for COPY, grouped by UTC month."""

    first_line: int
    by_month: dict[dt.date, pa.Table]


@dataclass
class PresenceReader:
    """Streams a presence file as validated batches and collects what it saw."""

    path: Path
    rollup_time_zone: str = "Europe/Berlin"
    rows: int = 0
    cell_ids: dict[int, tuple[str, int, int]] = field(default_factory=dict)
    first_hour: dt.datetime | None = None
    last_hour: dt.datetime | None = None
    errors: list[str] = field(default_factory=list)
    error_total: int = 0
    _malformed_rows: int = 0

    def batches(self) -> Iterator[PresenceBatch]:
        """Valid batches until the first bad line; after that only errors are collected."""
        next_line = 2
        for batch in self._raw_batches():
            if self._malformed_rows:  # this batch skipped lines, so its line numbers are off
                break
            valid = self._validate(batch, next_line)
            first_line, next_line = next_line, next_line + batch.num_rows
            self.rows += batch.num_rows
            if valid is not None and not self.errors:
                valid = valid.append_column("line", pa.array(np.arange(first_line, next_line)))
                yield PresenceBatch(first_line=first_line, by_month=_split_by_month(valid))
        if self._malformed_rows:
            self.errors, self.error_total = _lines_with_wrong_field_count(self.path)
        if self.errors:
            raise LoadRejected(self.errors, self.error_total)
        if not self.rows:
            raise LoadRejected(["the file has a header but no data lines"], 1)

    def _raw_batches(self) -> Iterator[pa.RecordBatch]:
        if self.path.suffix == ".parquet":
            yield from _parquet_batches(self.path)
            return
        with self.path.open(encoding="utf-8-sig", newline="") as head:
            header = head.readline().rstrip("\r\n")
        if header != PRESENCE_HEADER:
            raise LoadRejected([f"line 1: header must be exactly {PRESENCE_HEADER!r}, got {header!r}"], 1)

        def wrong_field_count(row) -> str:
            self._malformed_rows += 1
            return "skip"

        yield from pacsv.open_csv(
            self.path,
            read_options=pacsv.ReadOptions(block_size=BATCH_BYTES, skip_rows=1, column_names=PRESENCE_COLUMNS),
            parse_options=pacsv.ParseOptions(invalid_row_handler=wrong_field_count),
            convert_options=pacsv.ConvertOptions(
                column_types={name: TEXT for name in PRESENCE_COLUMNS},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )

    def _validate(self, batch: pa.RecordBatch, first_line: int) -> pa.Table | None:
        cells = _per_value(batch["cell"], self._cell_ids)
        hours = _per_value(batch["hour"], _utc_hours)
        ages = _per_value(batch["age_band"], lambda v: pc.index_in(v, value_set=pa.array(AGE_BANDS)))
        genders = _per_value(batch["gender"], lambda v: pc.index_in(v, value_set=pa.array(GENDERS)))
        visits = _per_value(batch["visits"], _visit_counts)
        valid = pc.and_(
            pc.and_(pc.is_valid(cells), pc.is_valid(hours)),
            pc.and_(pc.and_(pc.is_valid(ages), pc.is_valid(genders)), pc.is_valid(visits)),
        )
        bad = np.flatnonzero(~valid.to_numpy(zero_copy_only=False))
        room = max(MAX_LISTED_ERRORS - len(self.errors), 0)
        for index in bad[:room]:
            self._reject(first_line + int(index), _why(batch, int(index)))
        self.error_total += max(len(bad) - room, 0)  # counted, not listed
        if len(bad):
            return None
        self._note_hours(hours)
        return pa.table(
            {
                "cell_id": cells,
                "hour": pc.cast(batch["hour"], pa.string()),
                "age_band": pc.cast(ages, pa.int16()),
                "gender": pc.cast(genders, pa.int16()),
                "visits": pc.cast(batch["visits"], pa.string()),
                "count": visits,
                "month": _per_value(batch["hour"], _utc_months),
                "day": _per_value(batch["hour"], self._local_days),
            }
        )

    def _local_days(self, values: pa.Array) -> pa.Array:
        zone = ZoneInfo(self.rollup_time_zone)
        days = [dt.datetime.fromisoformat(hour).astimezone(zone).date() for hour in values.to_pylist()]
        return pa.array(days, pa.date32())

    def _cell_ids(self, codes: pa.Array) -> pa.Array:
        ids = []
        for code in codes.to_pylist():
            try:
                northing, easting = cell_corner(code)
            except InvalidCellCode:
                ids.append(None)
                continue
            ids.append(cell_id(northing, easting))
            self.cell_ids.setdefault(ids[-1], (code, northing, easting))
        return pa.array(ids, pa.int64())

    def _note_hours(self, hours: pa.Array) -> None:
        span = pc.min_max(hours).as_py()
        first, last = span["min"], span["max"]
        self.first_hour = first if self.first_hour is None else min(self.first_hour, first)
        self.last_hour = last if self.last_hour is None else max(self.last_hour, last)

    def _reject(self, line_number: int, reason: str) -> None:
        self.error_total += 1
        if len(self.errors) < MAX_LISTED_ERRORS:
            self.errors.append(f"line {line_number}: {reason}")


def _lines_with_wrong_field_count(path: Path) -> tuple[list[str], int]:
    errors, total = [], 0
    with path.open(encoding="utf-8-sig", newline="") as lines:
        for line_number, line in enumerate(lines, start=1):
            fields = line.rstrip("\r\n").count(",") + 1
            if line_number > 1 and fields != len(PRESENCE_COLUMNS):
                total += 1
                if len(errors) < MAX_LISTED_ERRORS:
                    errors.append(f"line {line_number}: expected 5 comma-separated fields, got {fields}")
    return errors, total


def presence_csv(table: pa.Table, version: int) -> bytes:
    """The COPY ... (FORMAT csv) payload for a validated month of rows."""
    out = table.select(["cell_id", "hour", "age_band", "gender", "visits"]).append_column(
        "dataset_version_id", pa.array(np.full(table.num_rows, version, dtype=np.int64))
    )
    buffer = io.BytesIO()
    pacsv.write_csv(out, buffer, pacsv.WriteOptions(include_header=False))
    return buffer.getvalue()


def day_sums_csv(table: pa.Table) -> bytes:
    """COPY payload of (cell_id, day, age_band, gender, visits): this batch's sums per local day."""
    keys = ["cell_id", "day", "age_band", "gender"]
    sums = table.group_by(keys).aggregate([("count", "sum")]).select([*keys, "count_sum"])
    buffer = io.BytesIO()
    pacsv.write_csv(sums, buffer, pacsv.WriteOptions(include_header=False))
    return buffer.getvalue()


def staging_csv(table: pa.Table) -> bytes:
    """COPY payload of (line, cell_id, hour, age_band, gender), to find repeated rows."""
    buffer = io.BytesIO()
    columns = ["line", "cell_id", "hour", "age_band", "gender"]
    pacsv.write_csv(table.select(columns), buffer, pacsv.WriteOptions(include_header=False))
    return buffer.getvalue()


def _per_value(column: pa.ChunkedArray | pa.Array, check) -> pa.Array:
    """Apply `check` to the distinct values of a dictionary column and spread the result."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return pc.take(check(column.dictionary), column.indices)


def _utc_hours(values: pa.Array) -> pa.Array:
    parts = pc.extract_regex(values, HOUR_TEXT)
    hours = pc.strptime(pc.struct_field(parts, "hour"), format="%Y-%m-%dT%H", unit="s", error_is_null=True)
    return pc.assume_timezone(hours, "UTC")


def _utc_months(values: pa.Array) -> pa.Array:
    return pc.strptime(pc.utf8_slice_codeunits(values, 0, 7), format="%Y-%m", unit="s", error_is_null=True)


def _visit_counts(values: pa.Array) -> pa.Array:
    digits = pc.match_substring_regex(values, r"^\d{1,10}$")
    counts = pc.cast(pc.if_else(digits, values, "0"), pa.int64())
    return pc.if_else(pc.and_(digits, pc.less_equal(counts, MAX_VISITS)), counts, None)


def _split_by_month(table: pa.Table) -> dict[dt.date, pa.Table]:
    months = pc.unique(table["month"]).to_pylist()
    if len(months) == 1:
        return {months[0].date(): table}
    return {month.date(): table.filter(pc.equal(table["month"], month)) for month in months}


def _why(batch: pa.RecordBatch, index: int) -> str:
    """The reason one line is bad, in the words of the per-value checks."""
    code, hour, age_band, gender, visits = (batch[name][index].as_py() for name in PRESENCE_COLUMNS)
    try:
        cell_corner(code)
    except InvalidCellCode as exc:
        return str(exc)
    problem = hour_problem(hour)
    if problem:
        return problem
    if age_band not in AGE_BANDS:
        return f"age_band must be one of {' '.join(AGE_BANDS)}, got {age_band!r}"
    if gender not in GENDERS:
        return f"gender must be f, m or *, got {gender!r}"
    return f"visits must be a non-negative integer below 2^31, got {visits!r}"


def hour_problem(hour: str) -> str | None:
    try:
        parsed = dt.datetime.fromisoformat(hour)
    except ValueError:
        return f"hour must be an ISO 8601 UTC time such as 2026-03-29T00:00:00Z, got {hour!r}"
    if parsed.utcoffset() != dt.timedelta(0):
        return f"hour must be in UTC (Z or +00:00), got {hour!r}"
    if (parsed.minute, parsed.second, parsed.microsecond) != (0, 0, 0):
        return f"hour must be the start of an hour, got {hour!r}"
    return None


def _parquet_batches(path: Path) -> Iterator[pa.RecordBatch]:
    """Parquet columns may be typed; turn them into the text the checks expect."""
    source = pq.ParquetFile(path)
    missing = [name for name in PRESENCE_COLUMNS if name not in source.schema_arrow.names]
    if missing:
        raise LoadRejected([f"the Parquet file lacks the column(s) {', '.join(missing)}"], 1)
    for batch in source.iter_batches(batch_size=1 << 20, columns=PRESENCE_COLUMNS):
        columns = []
        for name in PRESENCE_COLUMNS:
            column = batch[name]
            if pa.types.is_timestamp(column.type):
                column = pc.strftime(pc.cast(column, pa.timestamp("s", tz="UTC")), format="%Y-%m-%dT%H:%M:%SZ")
            columns.append(pc.dictionary_encode(pc.cast(column, pa.string())))
        yield pa.RecordBatch.from_arrays(columns, names=PRESENCE_COLUMNS)
