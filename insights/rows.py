"""A result's rows, held as columns: a pyarrow Table that the engine builds from its sum arrays,
that is stored as Arrow IPC batches (marketplace.ResultBatch) and from which the downloads are
written batch by batch. No dict per row is made on that path; a reader that wants rows as dicts
(a chart, the inline result of a small report) gets them a batch at a time."""

import functools
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa

ROWS_PER_BATCH = 10_000  # rows per stored batch: a page or a download reads a few at a time


class Rows:
    """A sequence of row dicts over a Table: len, iteration, indexing and equality with a list
    behave as the list of dicts it stands for."""

    __slots__ = ("table",)

    def __init__(self, table: pa.Table):
        self.table = table

    def __len__(self) -> int:
        return self.table.num_rows

    def __iter__(self) -> Iterator[dict]:
        for batch in self.table.to_batches(ROWS_PER_BATCH):
            yield from batch.to_pylist()

    def __getitem__(self, index):
        if isinstance(index, slice):
            return list(self)[index]
        position = range(self.table.num_rows)[index]  # IndexError beyond the end, as a list's
        return self.table.slice(position, 1).to_pylist()[0]

    def __eq__(self, other) -> bool:
        if isinstance(other, Rows):
            return self.table.equals(other.table)
        return isinstance(other, list) and list(self) == other

    def __repr__(self) -> str:
        return f"Rows({self.table.num_rows} rows: {', '.join(self.table.column_names)})"

    def column(self, name: str) -> list:
        return self.table.column(name).to_pylist()


def labelled(codes: np.ndarray, labels: Sequence[str | None] | pa.Array) -> pa.DictionaryArray:
    """Labels picked by code (None: null), stored once each: bucket stamps, segments, zones."""
    dictionary = labels if isinstance(labels, pa.Array) else label_array(tuple(labels))
    return pa.DictionaryArray.from_arrays(pa.array(np.asarray(codes, dtype=np.int32)), dictionary)


@functools.lru_cache(maxsize=64)
def label_array(labels: tuple[str | None, ...]) -> pa.Array:
    """The labels as an Arrow array, made once per worker: a segment's, the zones' of a report
    (from a list, Arrow infers and converts each item)."""
    return pa.array(labels, pa.string())


def whole_or_null(values: np.ndarray, present: np.ndarray) -> pa.Array:
    """Whole numbers, rounded half to even as round() does; null where nothing was published."""
    return pa.array(np.rint(values).astype(np.int64), pa.int64(), mask=~present)


def rounded(values: np.ndarray, decimals: int, present: np.ndarray | None = None) -> pa.Array:
    return pa.array(np.round(values, decimals), pa.float64(), mask=None if present is None else ~present)


def ipc_bytes(table: pa.Table) -> bytes:
    """One batch of a result as an Arrow IPC stream."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes | memoryview) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def batches(table: pa.Table) -> Iterator[tuple[int, pa.Table]]:
    """(first row, slice) of ROWS_PER_BATCH rows each; one empty slice for an empty table, so
    its columns are stored too."""
    if table.num_rows == 0:
        yield 0, table
        return
    for first in range(0, table.num_rows, ROWS_PER_BATCH):
        yield first, table.slice(first, ROWS_PER_BATCH)
