"""Waking the requests that wait on a report (GET reports/{id}/?wait=) when it is final.

PostgreSQL notifies `report_final` with the report's id when its status becomes final (a trigger,
migration 0027: every path that finishes a report does, when it commits). One thread per web
process listens on a connection of its own, started with the first wait, and wakes that report's
waiters. It remembers the reports notified in the last RECENT_SECONDS, so a request that read the
report unfinished a moment before it began to wait knows at once. So a waiting request costs no
query while it waits; it still looks at the row every REPORT_WAIT_POLL_SECONDS, and when the
listener reconnects, in case a notification was missed."""

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

import psycopg
from django.db import connection

logger = logging.getLogger(__name__)

CHANNEL = "report_final"
# How long the listener blocks before it looks whether it was asked to stop; after a failure, how
# long it waits before it connects again.
LISTEN_TICK_SECONDS = 1.0
RECONNECT_SECONDS = 1.0
# Longer than a request takes from reading a report to waiting on it.
RECENT_SECONDS = 10.0

_lock = threading.Lock()
_waiters: dict[str, set[threading.Event]] = {}
_recent: dict[str, float] = {}  # report id: when it was notified (time.monotonic()), oldest first
_listener: threading.Thread | None = None
_stop = threading.Event()


@contextlib.contextmanager
def final_event(report_id) -> Iterator[threading.Event]:
    """An event set when the report was notified final (notified() says so; already set if it was
    a moment ago), or may have become final unnoticed (look at the row to know)."""
    _listener_start()
    key, event = str(report_id), threading.Event()
    with _lock:
        _waiters.setdefault(key, set()).add(event)
        if key in _recent:
            event.set()
    try:
        yield event
    finally:
        with _lock:
            events = _waiters.get(key, set())
            events.discard(event)
            if not events:
                _waiters.pop(key, None)


def notified(report_id) -> bool:
    """Whether the report was notified final within RECENT_SECONDS: it is final (or was, if an
    account manager queued it again since)."""
    with _lock:
        return str(report_id) in _recent


def _notified(report_id: str) -> None:
    now = time.monotonic()
    with _lock:
        _recent.pop(report_id, None)
        _recent[report_id] = now
        while next(iter(_recent.values())) < now - RECENT_SECONDS:
            del _recent[next(iter(_recent))]
    _wake(report_id)


def _wake(report_id: str | None = None) -> None:
    """Wake the report's waiters, or (None) every waiter: the listener may have missed something."""
    with _lock:
        events = [event for key, waiting in _waiters.items() if report_id in (None, key) for event in waiting]
    for event in events:
        event.set()


def _listener_start() -> None:
    global _listener
    with _lock:
        if _listener is not None and _listener.is_alive():
            return
        _stop.clear()
        # Its own connection, made from this process's database settings (after gunicorn's fork).
        params = connection.get_connection_params()
        _listener = threading.Thread(target=_listen, args=(params,), name="report-final-listener", daemon=True)
        _listener.start()


def _listen(params: dict) -> None:
    while not _stop.is_set():
        try:
            with psycopg.connect(**params, autocommit=True) as listening:
                listening.execute(f"LISTEN {CHANNEL}")
                _wake()  # what became final while nobody listened is looked at now
                while not _stop.is_set():
                    for notify in listening.notifies(timeout=LISTEN_TICK_SECONDS):
                        _notified(notify.payload)
        except psycopg.Error:
            logger.warning("report waits: listening for final reports failed; reconnecting", exc_info=True)
            _wake()
            _stop.wait(RECONNECT_SECONDS)


def listener_stop() -> None:
    """Stop this process's listener and close its connection (tests: before the database goes)."""
    global _listener
    thread = _listener
    if thread is None:
        return
    _stop.set()
    thread.join(timeout=LISTEN_TICK_SECONDS + 5)
    _listener = None
