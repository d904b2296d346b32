"""Reading and validating aggregate files keyed by place (grid cell or region) and hour, in
column batches (pyarrow), CSV or Parquet.

Places, hours and segments repeat on nearly every line, so they are read
dictionary-encoded and each distinct value is checked once per batch; only the lines
that fail are looked at one by one, to say exactly why.
"""

import datetime as dt
import io
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from insights.grid import InvalidCellCode, cell_corner, cell_id
from insights.kinds import PRESENCE, AggregateKind, RegionCodes

MAX_LISTED_ERRORS = 20
MAX_COUNT = 2**31 - 1
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
class CellHourReader:
    """Streams a file of one kind as validated batches and collects what it saw."""

    path: Path
    kind: AggregateKind = PRESENCE
    rows: int = 0
    cell_ids: dict[int, tuple[str, int, int]] = field(default_factory=dict)
    zone_ids: set[int] = field(default_factory=set)
    first_hour: dt.datetime | None = None
    last_hour: dt.datetime | None = None
    errors: list[str] = field(default_factory=list)
    error_total: int = 0
    _malformed_rows: int = 0

    def __post_init__(self):
        self.labels = self.kind.labels()
        self._cell_id_of_code: dict[str, int | None] = {}
        # Trips name their origin zone by region code, which the destination's labels list too.
        self._region_codes = RegionCodes(with_all=False).labels() if not self.kind.in_grid else ()

    def batches(self) -> Iterator[dict[dt.date, pa.Table]]:
        """Valid batches, each as its rows per UTC month in the file's order, until the first
        bad line; after that only errors are collected."""
        next_line = 2
        for batch in self._raw_batches():
            if self._malformed_rows:  # this batch skipped lines, so its line numbers are off
                break
            valid = self._validate(batch, next_line)
            first_line, next_line = next_line, next_line + batch.num_rows
            self.rows += batch.num_rows
            if valid is not None and not self.errors:
                valid = valid.append_column("line", pa.array(np.arange(first_line, next_line)))
                yield split_by_month(valid)
        if self._malformed_rows:
            self.errors, self.error_total = _lines_with_wrong_field_count(self.path, len(self.kind.columns))
        if self.errors:
            raise LoadRejected(self.errors, self.error_total)
        if not self.rows:
            raise LoadRejected(["the file has a header but no data lines"], 1)

    def _raw_batches(self) -> Iterator[pa.RecordBatch]:
        columns = self.kind.columns
        if self.path.suffix == ".parquet":
            yield from _parquet_batches(self.path, columns)
            return
        with self.path.open(encoding="utf-8-sig", newline="") as head:
            header = head.readline().rstrip("\r\n")
        if header != self.kind.header:
            raise LoadRejected([f"line 1: header must be exactly {self.kind.header!r}, got {header!r}"], 1)

        def wrong_field_count(row) -> str:
            self._malformed_rows += 1
            return "skip"

        yield from pacsv.open_csv(
            self.path,
            read_options=pacsv.ReadOptions(block_size=BATCH_BYTES, skip_rows=1, column_names=columns),
            parse_options=pacsv.ParseOptions(invalid_row_handler=wrong_field_count),
            convert_options=pacsv.ConvertOptions(
                column_types={name: TEXT for name in columns},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )

    def _validate(self, batch: pa.RecordBatch, first_line: int) -> pa.Table | None:
        places = _per_value(batch[self.kind.place], self._cell_ids if self.kind.in_grid else self._zone_ids)
        hours = _per_value(batch["hour"], _utc_hours)
        codes = {
            name: _per_value(batch[name], lambda values, labels=labels: pc.index_in(values, value_set=pa.array(labels)))
            for name, labels in self.labels.items()
        }
        counts = _per_value(batch[self.kind.value], _counts)
        valid = pc.and_(pc.and_(pc.is_valid(places), pc.is_valid(hours)), pc.is_valid(counts))
        for segment in codes.values():
            valid = pc.and_(valid, pc.is_valid(segment))
        bad = np.flatnonzero(~valid.to_numpy(zero_copy_only=False))
        room = max(MAX_LISTED_ERRORS - len(self.errors), 0)
        for index in bad[:room]:
            self._reject(first_line + int(index), self._why(batch, int(index)))
        self.error_total += max(len(bad) - room, 0)  # counted, not listed
        if len(bad):
            return None
        self._note_hours(hours)
        return pa.table(
            {
                "place_id": places,
                "hour": batch["hour"],
                "instant": hours,
                **{name: pc.cast(segment, pa.int16()) for name, segment in codes.items()},
                "count": counts,
                "month": _per_value(batch["hour"], _utc_months),
            }
        )

    def _cell_ids(self, codes: pa.Array) -> pa.Array:
        ids = []
        for code in codes.to_pylist():
            if code not in self._cell_id_of_code:  # each batch names the same cells again
                self._cell_id_of_code[code] = self._new_cell_id(code)
            ids.append(self._cell_id_of_code[code])
        return pa.array(ids, pa.int64())

    def _new_cell_id(self, code: str) -> int | None:
        try:
            northing, easting = cell_corner(code)
        except InvalidCellCode:
            return None
        self.cell_ids[cell_id(northing, easting)] = (code, northing, easting)
        return cell_id(northing, easting)

    def _zone_ids(self, codes: pa.Array) -> pa.Array:
        ids = pc.index_in(codes, value_set=pa.array(self._region_codes, pa.string()))
        self.zone_ids.update(ids.drop_null().to_pylist())
        return ids

    def _why(self, batch: pa.RecordBatch, index: int) -> str:
        """The reason one line is bad, in the words of the per-value checks."""
        value = {name: batch[name][index].as_py() for name in self.kind.columns}
        place = value[self.kind.place]
        if self.kind.in_grid:
            try:
                cell_corner(place)
            except InvalidCellCode as exc:
                return str(exc)
        elif place not in self._region_codes:
            return f"{self.kind.place} must be the code of a loaded region (load_regions), got {place!r}"
        problem = hour_problem(value["hour"])
        if problem:
            return problem
        for name, labels in self.labels.items():
            if value[name] not in labels:
                if isinstance(self.kind.segments[name], RegionCodes):
                    everyone = " or *" if self.kind.segments[name].with_all else ""
                    return f"{name} must be the code of a loaded region (load_regions){everyone}, got {value[name]!r}"
                return f"{name} must be one of {' '.join(labels)}, got {value[name]!r}"
        return f"{self.kind.value} must be a non-negative integer below 2^31, got {value[self.kind.value]!r}"

    def _note_hours(self, hours: pa.Array) -> None:
        span = pc.min_max(hours).as_py()
        first, last = span["min"], span["max"]
        self.first_hour = first if self.first_hour is None else min(self.first_hour, first)
        self.last_hour = last if self.last_hour is None else max(self.last_hour, last)

    def _reject(self, line_number: int, reason: str) -> None:
        self.error_total += 1
        if len(self.errors) < MAX_LISTED_ERRORS:
            self.errors.append(f"line {line_number}: {reason}")


def _lines_with_wrong_field_count(path: Path, expected: int) -> tuple[list[str], int]:
    errors, total = [], 0
    with path.open(encoding="utf-8-sig", newline="") as lines:
        for line_number, line in enumerate(lines, start=1):
            fields = line.rstrip("\r\n").count(",") + 1
            if line_number > 1 and fields != expected:
                total += 1
                if len(errors) < MAX_LISTED_ERRORS:
                    errors.append(f"line {line_number}: expected {expected} comma-separated fields, got {fields}")
    return errors, total


def staging_csv(kind: AggregateKind, table: pa.Table) -> bytes:
    """COPY payload of (line, key...), to find repeated rows."""
    hour_text = pc.cast(table["hour"], pa.string())
    return _csv(
        pa.table(
            {
                "line": table["line"],
                "place_id": table["place_id"],
                "hour": hour_text,
                **{name: table[name] for name in kind.segments},
            }
        )
    )


def _csv(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=False))
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


def _counts(values: pa.Array) -> pa.Array:
    digits = pc.match_substring_regex(values, r"^\d{1,10}$")
    counts = pc.cast(pc.if_else(digits, values, "0"), pa.int64())
    return pc.if_else(pc.and_(digits, pc.less_equal(counts, MAX_COUNT)), counts, None)


def split_by_month(table: pa.Table) -> dict[dt.date, pa.Table]:
    months = sorted(pc.unique(table["month"]).to_pylist())  # in time order, as insights/repeats.py expects
    if len(months) == 1:
        return {months[0].date(): table}
    return {month.date(): table.filter(pc.equal(table["month"], month)) for month in months}


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


def _parquet_batches(path: Path, names: list[str]) -> Iterator[pa.RecordBatch]:
    """Parquet columns may be typed; turn them into the text the checks expect."""
    source = pq.ParquetFile(path)
    missing = [name for name in names if name not in source.schema_arrow.names]
    if missing:
        raise LoadRejected([f"the Parquet file lacks the column(s) {', '.join(missing)}"], 1)
    for batch in source.iter_batches(batch_size=1 << 20, columns=names):
        yield pa.RecordBatch.from_arrays([_as_text_dictionary(batch[name]) for name in names], names=names)


def _as_text_dictionary(column: pa.Array) -> pa.DictionaryArray:
    """The dictionary-encoded text the checks expect, formatting each distinct value once."""
    if pa.types.is_dictionary(column.type) and pa.types.is_string(column.type.value_type):
        return column
    if pa.types.is_timestamp(column.type):
        encoded = pc.dictionary_encode(pc.cast(column, pa.timestamp("s", tz="UTC")))
        text = pc.strftime(encoded.dictionary, format="%Y-%m-%dT%H:%M:%SZ")
        return pa.DictionaryArray.from_arrays(encoded.indices, text)
    return pc.dictionary_encode(pc.cast(column, pa.string()))


def read_ahead(items: Iterator, *, depth: int = 2) -> Iterator:
    """The items of an iterator, computed up to `depth` ahead in a thread.

    pyarrow and numpy release the GIL, so reading and encoding the next batch overlaps with
    the database taking this one. An exception in the thread is raised here; stopping early
    stops the thread.
    """
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        ready.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put((end, None))
        except BaseException as exc:  # handed to the consumer, raised there
            ready.put((end, exc))

    thread = threading.Thread(target=produce, name="read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = ready.get()
            if item is end:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # let a producer blocked on a full queue see the stop
            try:
                ready.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.1)
