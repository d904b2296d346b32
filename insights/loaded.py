"""How loaded (exact) values are stored: packed, a row per place, UTC day and segment.

A row of insights_<kind>_raw holds one place's values of one segment for one UTC day of one
dataset version: `hours`, the hours of the day (0-23) that have a value, and `counts`, the
values in the same order. A day whose rows reach the loader in several pieces (a file out of
time order, or a day larger than MAX_PENDING_ROWS) has several rows; nothing keys them, so a
day split in two is still one day's values. The view insights_<kind> unpacks them into one row
per value, as the tables were before (docs/scaling.md, section 5): the release build reads it.

A row per value cost ~100 bytes and about a microsecond of the server's time to copy; packed,
a value costs 12-18 bytes (metro L) and the server copies a row per place-day instead of a
row per hour.
"""

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from insights.kinds import AggregateKind

# Rows held back to complete their days: enough for a day of a metro, bounded for a country.
MAX_PENDING_ROWS = 4_000_000
SECONDS_PER_DAY = 86_400
POSTGRES_EPOCH_DAY = 10_957  # 2000-01-01 in days since 1970-01-01, where binary dates count from
COPY_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
COPY_BINARY_TRAILER = b"\xff\xff"
NUMPY_TYPES = {"int2": ">i2", "int4": ">i4", "int8": ">i8"}
ARRAY_ELEMENT_OIDS = {"int2": 21, "int4": 23, "int8": 20}


def whole_days(pieces: Iterator[pa.Table]) -> Iterator[pa.Table]:
    """The validated rows, with their UTC day, regrouped so that a day's rows come together: in
    a file in time order, a day is complete once a piece begins after it. Holds at most
    MAX_PENDING_ROWS rows back."""
    pending: list[pa.Table] = []
    held = 0
    for piece in pieces:
        piece = piece.append_column("day", _days(piece))
        pending.append(piece)
        held += piece.num_rows
        rows = pa.concat_tables(pending)
        if held >= MAX_PENDING_ROWS:
            yield rows
            pending, held = [], 0
            continue
        complete = pc.less(rows["day"], pc.min(piece["day"]))
        if pc.any(complete).as_py():
            yield rows.filter(complete)
            rest = rows.filter(pc.invert(complete))
            pending, held = [rest], rest.num_rows
    if held:
        yield pa.concat_tables(pending)


def key_columns(kind: AggregateKind) -> list[str]:
    """The order of packed rows: a place's rows together (a report over a few cells reads a few
    pages), its hours (and so its days) in order; a key repeated sits next to its twin."""
    return ["place_id", *kind.segments, "instant"]


def in_key_order(kind: AggregateKind, rows: pa.Table) -> pa.Table:
    """Rows of whole_days sorted as packed_binary wants them."""
    return rows.sort_by([(name, "ascending") for name in key_columns(kind)])


def packed_binary(kind: AggregateKind, rows: pa.Table, version: int) -> bytes:
    """The COPY ... (FORMAT binary) payload of insights_<kind>_raw for validated rows in key
    order (in_key_order): their place, day, segments, version, hours and counts.

    Rows with the same number of hours have the same width, so each such group is one numpy
    record array (the arrays as subarray fields): no Python per row or value."""
    place_segments = ["place_id", *kind.segments]
    days = rows["day"].to_numpy()
    keys = [rows[name].to_numpy() for name in place_segments]
    starts = np.flatnonzero(np.concatenate([[True], np.any([key[1:] != key[:-1] for key in [*keys, days]], axis=0)]))
    lengths = np.diff(np.append(starts, rows.num_rows))
    seconds = pc.cast(rows["instant"], pa.timestamp("s")).cast(pa.int64()).to_numpy()
    hours = (seconds % SECONDS_PER_DAY) // 3600
    counts = rows["count"].to_numpy()
    parts = [COPY_BINARY_HEADER]
    for length in np.unique(lengths):
        group = starts[lengths == length]
        record = np.zeros(len(group), _layout(kind, int(length)))
        _fill_constants(record, kind, int(length), version)
        record["place_id"] = keys[0][group]
        for name, key in zip(kind.segments, keys[1:], strict=True):
            record[name] = key[group]
        record["day"] = days[group] - POSTGRES_EPOCH_DAY
        values = group[:, None] + np.arange(length)
        record["hours"]["elements"]["number"] = hours[values]
        record["counts"]["elements"]["number"] = counts[values]
        parts.append(record.data)
    parts.append(COPY_BINARY_TRAILER)
    return b"".join(parts)


def _days(rows: pa.Table) -> pa.Array:
    seconds = pc.cast(rows["instant"], pa.timestamp("s")).cast(pa.int64())
    return pc.cast(pc.divide(seconds, SECONDS_PER_DAY), pa.int32())  # after 1970: truncation is floor


def _columns(kind: AggregateKind) -> dict[str, str]:
    return {"place_id": kind.place_type, "day": "int4", **dict.fromkeys(kind.segments, "int2"), "version": "int8"}


def _array(element: str, length: int) -> list:
    """A one-dimensional array without nulls in PostgreSQL's binary format: its header, then
    each element as (width, value)."""
    header = [(name, ">i4") for name in ("byte_length", "dimensions", "has_nulls", "element_oid", "length", "lbound")]
    return [*header, ("elements", [("width", ">i4"), ("number", NUMPY_TYPES[element])], (length,))]


def _layout(kind: AggregateKind, length: int) -> np.dtype:
    layout: list = [("fields", ">i2")]
    for name, type_name in _columns(kind).items():
        layout += [(f"{name}_width", ">i4"), (name, NUMPY_TYPES[type_name])]
    layout += [("hours", _array("int2", length)), ("counts", _array(kind.value_type, length))]
    return np.dtype(layout)


def _fill_constants(record: np.ndarray, kind: AggregateKind, length: int, version: int) -> None:
    """What every row of the group shares: the field count, the widths, the version and the arrays' headers."""
    record["fields"] = len(_columns(kind)) + 2
    for name, type_name in _columns(kind).items():
        record[f"{name}_width"] = np.dtype(NUMPY_TYPES[type_name]).itemsize
    record["version"] = version
    for array, element in (("hours", "int2"), ("counts", kind.value_type)):
        width = np.dtype(NUMPY_TYPES[element]).itemsize
        record[array]["byte_length"] = 20 + length * (4 + width)
        record[array]["dimensions"] = 1
        record[array]["element_oid"] = ARRAY_ELEMENT_OIDS[element]
        record[array]["length"] = length
        record[array]["lbound"] = 1
        record[array]["elements"]["width"] = width
