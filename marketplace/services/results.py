"""Storing a report's result: its small document in Report.result, its arrays of rows as Arrow
batches (ResultBatch), written from the engine's columns without a dict per row."""

import hashlib
import json
from dataclasses import dataclass

from insights.rows import Rows, batches, ipc_bytes


@dataclass(frozen=True)
class ResultBatches:
    """A result's arrays as the batches to store (ResultBatch's columns), and the SHA-256 of the
    result as stored (the document's canonical JSON, then every batch's bytes in order), for
    the release log."""

    names: list[str]
    first_rows: list[int]
    rows: list[int]
    data: list[bytes]
    sha256: str


def result_split(result: dict) -> tuple[dict, dict[str, Rows]]:
    """The document without its arrays of rows, and those arrays by name."""
    head = {name: value for name, value in result.items() if not isinstance(value, Rows)}
    return head, {name: value for name, value in result.items() if isinstance(value, Rows)}


def result_batches(*, head: dict, arrays: dict[str, Rows]) -> ResultBatches:
    """The arrays' batches, to be written with the report's success (runs._report_finished)."""
    digest = hashlib.sha256(json.dumps(head, sort_keys=True, separators=(",", ":")).encode())
    names, first_rows, counts, streams = [], [], [], []
    for name, rows in arrays.items():
        for first, part in batches(rows.table):
            stream = ipc_bytes(part)
            digest.update(stream)
            names.append(name)
            first_rows.append(first)
            counts.append(part.num_rows)
            streams.append(stream)
    return ResultBatches(names=names, first_rows=first_rows, rows=counts, data=streams, sha256=digest.hexdigest())
