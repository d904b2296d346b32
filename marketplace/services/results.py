"""Storing a report's result: its small document in Report.result, its arrays of rows as Arrow
batches (ResultBatch), written from the engine's columns without a dict per row."""

import hashlib
import json

from insights.rows import Rows, batches, ipc_bytes
from marketplace.models import ResultBatch


def result_split(result: dict) -> tuple[dict, dict[str, Rows]]:
    """The document without its arrays of rows, and those arrays by name."""
    head = {name: value for name, value in result.items() if not isinstance(value, Rows)}
    return head, {name: value for name, value in result.items() if isinstance(value, Rows)}


def result_batches_store(*, report_id, head: dict, arrays: dict[str, Rows]) -> str:
    """Store the arrays' batches; returns the SHA-256 of the result as stored (the document's
    canonical JSON, then every batch's bytes in order), for the release log."""
    digest = hashlib.sha256(json.dumps(head, sort_keys=True, separators=(",", ":")).encode())
    stored = []
    for name, rows in arrays.items():
        for first, part in batches(rows.table):
            data = ipc_bytes(part)
            digest.update(data)
            stored.append(ResultBatch(report_id=report_id, name=name, first_row=first, rows=part.num_rows, data=data))
    ResultBatch.objects.bulk_create(stored)
    return digest.hexdigest()
