"""The request, tenant, report and Celery task a log line belongs to, kept in a context
variable: the request middleware and the Celery signals open a scope, code inside it may add
to it (log_context_update), and every log record is stamped from it (logs.LogContextFilter).

This module imports no models: the logging configuration loads it before the apps are ready."""

import contextlib
import re
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from django.utils.functional import SimpleLazyObject

# The fields a log line carries where known, in this order.
FIELDS = ("request_id", "tenant", "report_id", "task_id")

# An incoming X-Request-ID is kept only if it looks like an id: no spaces, quotes or control
# characters to forge log lines or headers with, and short.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")

# One dict per scope, never shared between scopes; None outside any scope.
_scope: ContextVar[dict[str, Any] | None] = ContextVar("log_scope", default=None)


def request_id_from_header(value: str | None) -> str:
    """The caller's request id if it is sane, else a new one."""
    if value and _SANE_REQUEST_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


@contextlib.contextmanager
def log_scope(**fields: Any) -> Iterator[dict[str, Any]]:
    """A scope with the enclosing scope's fields and these; the enclosing one is back after it
    (an eager Celery task inside a request must not end the request's scope)."""
    scope = {**(_scope.get() or {}), **{name: value for name, value in fields.items() if value is not None}}
    token = _scope.set(scope)
    try:
        yield scope
    finally:
        _scope.reset(token)


def log_context_update(**fields: Any) -> None:
    """Add fields to the current scope (say, the report a request just created). Outside any
    scope this does nothing: a field must not outlive the work it describes."""
    scope = _scope.get()
    if scope is not None:
        scope.update({name: value for name, value in fields.items() if value is not None})


def log_context() -> dict[str, Any]:
    """The known fields of the current scope; the tenant of an authenticated API request is
    read from the request when it is not set."""
    scope = _scope.get()
    if not scope:
        return {}
    known = {name: scope[name] for name in FIELDS if scope.get(name) is not None}
    if "tenant" not in known and (tenant := _request_tenant(scope.get("request"))) is not None:
        known["tenant"] = tenant
    return known


def _request_tenant(request) -> int | None:
    # DRF authenticates inside the view and then sets request.user to the API key's Principal.
    # Only a user already in place is read: evaluating Django's lazy user would query the
    # database from inside a log call.
    user = getattr(request, "__dict__", {}).get("user")
    if user is None or isinstance(user, SimpleLazyObject):
        return None
    return getattr(getattr(user, "tenant", None), "pk", None)
