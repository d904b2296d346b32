"""Log lines as JSON (one object a line, for a log collector) or as text (for a terminal),
chosen by LOG_FORMAT; both carry the request, tenant, report and task they belong to."""

import logging

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

from marketplace.observability.context import FIELDS, log_context


class LogContextFilter(logging.Filter):
    """Stamps each record with the fields of its scope (None where not known)."""

    def filter(self, record: logging.LogRecord) -> bool:
        known = log_context()
        for name in FIELDS:
            # A field the caller passed in `extra` wins.
            if getattr(record, name, None) is None:
                setattr(record, name, known.get(name))
        return True


class JsonFormatter(_JsonFormatter):
    """{"timestamp", "level", "logger", "message", "request_id", "tenant", "report_id",
    "task_id", ...the record's extra fields}; fields not known are left out."""

    def __init__(self) -> None:
        super().__init__(
            ["levelname", "name", "message"],
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp=True,
            # Django's request logger passes the request object; its repr says nothing useful.
            reserved_attrs=[*RESERVED_ATTRS, "request"],
        )

    def process_log_record(self, log_data: dict) -> dict:
        return {name: value for name, value in log_data.items() if not (name in FIELDS and value is None)}


class TextFormatter(logging.Formatter):
    """`time level logger message [request_id=... tenant=...]`, the known fields only."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        known = " ".join(f"{name}={value}" for name in FIELDS if (value := getattr(record, name, None)) is not None)
        if not known:
            return line
        first, newline, rest = line.partition("\n")  # after the message, before a traceback
        return f"{first} [{known}]{newline}{rest}"
