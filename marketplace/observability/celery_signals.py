"""Celery's side of the log context: each task runs in a log scope with its task id, and the
request, tenant and report it was queued for (carried in the message's headers, so a report
ordered by one request can be followed into the worker); and Celery leaves the logging
configuration of settings.LOGGING in place (JSON or text) instead of installing its own.
Each task's run time is observed (footfall_task_duration_seconds)."""

import logging.config
import time
from typing import Any

from celery import signals
from django.conf import settings

from marketplace.observability.context import FIELDS, log_context, log_scope

# Message headers that carry the log context, prefixed so they clash with none of Celery's.
HEADER_PREFIX = "log_"
# The tasks whose first argument is a report id.
REPORT_TASKS = {"insights.tasks.compute_report"}

# Per task id, its scopes still open and when each began: a stack, as an eager task retried
# runs again, inside itself, under the same id.
_open_scopes: dict[str, list[tuple[Any, float]]] = {}


@signals.setup_logging.connect
def keep_django_logging(**kwargs: Any) -> None:
    """Connected at all, this stops Celery from replacing the root logger's handlers."""
    logging.config.dictConfig(settings.LOGGING)


@signals.before_task_publish.connect
def add_log_context_headers(headers: dict | None = None, **kwargs: Any) -> None:
    if headers is not None:
        for name, value in log_context().items():
            if name != "task_id":  # the new task has its own
                headers[f"{HEADER_PREFIX}{name}"] = value


@signals.task_prerun.connect
def open_task_scope(task_id: str | None = None, task=None, args=None, **kwargs: Any) -> None:
    if task_id is None or task is None:
        return
    fields = {name: _header(task.request, f"{HEADER_PREFIX}{name}") for name in FIELDS if name != "task_id"}
    if task.name in REPORT_TASKS and args:
        fields["report_id"] = str(args[0])
    scope = log_scope(**fields, task_id=task_id)
    scope.__enter__()
    _open_scopes.setdefault(task_id, []).append((scope, time.perf_counter()))


def _header(request, name: str) -> Any:
    # A worker puts a message's own headers on the request; apply(headers=...) keeps them apart.
    value = getattr(request, name, None)
    if value is None and isinstance(getattr(request, "headers", None), dict):
        value = request.headers.get(name)
    return value


@signals.task_postrun.connect
def close_task_scope(task_id: str | None = None, task=None, **kwargs: Any) -> None:
    scopes = _open_scopes.get(task_id)
    if scopes:
        scope, started = scopes.pop()
        scope.__exit__(None, None, None)
        if task is not None:
            # Imported here: this module loads with the Celery app, before Django's models.
            from marketplace.observability.metrics import task_observe

            task_observe(task_name=task.name, seconds=time.perf_counter() - started)
        if not scopes:
            del _open_scopes[task_id]
