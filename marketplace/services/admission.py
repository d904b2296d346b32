"""Admission: the service takes what it can check and compute, and answers 503 with
Retry-After early, instead of letting requests and reports queue without bound."""

import contextlib
import logging
import random
from collections.abc import Iterator

import psycopg
from django.conf import settings
from django.db import DatabaseError, connection, transaction

from marketplace.exceptions import ServiceUnavailable

logger = logging.getLogger(__name__)

# The first key of the advisory locks that are the admission slots (the second is the slot).
ADMISSION_LOCK = 0x4144  # "AD"


@contextlib.contextmanager
def order_admitted() -> Iterator[None]:
    """Hold one of ORDER_ADMISSION_SLOTS, service-wide, while an order or quote is checked
    (measuring areas and periods is the costly part of a request); none free within
    ADMISSION_WAIT_SECONDS: 503."""
    slot = _slot_take()
    if slot is None:
        logger.warning("admission: all %s order slots are taken", settings.ORDER_ADMISSION_SLOTS)
        raise ServiceUnavailable(
            "the service is checking as many orders as it can; nothing was changed, try again in a few seconds",
            code="service_busy",
            retry_after=settings.ADMISSION_RETRY_AFTER_SECONDS,
        )
    try:
        yield
    finally:
        with contextlib.suppress(DatabaseError), connection.cursor() as cursor:  # a lost connection freed it
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [ADMISSION_LOCK, slot])


def _slot_take() -> int | None:
    """A free slot; else, a burst being checked, the first of one slot drawn at random to be
    freed within ADMISSION_WAIT_SECONDS (PostgreSQL queues the waiters: nothing polls)."""
    with connection.cursor() as cursor:
        # Session locks: PostgreSQL frees them if this process dies holding one.
        cursor.execute(
            "SELECT slot FROM generate_series(0, %s - 1) AS slot WHERE pg_try_advisory_lock(%s, slot) LIMIT 1",
            [settings.ORDER_ADMISSION_SLOTS, ADMISSION_LOCK],
        )
        row = cursor.fetchone()
    if row is not None:
        return row[0]
    if settings.ADMISSION_WAIT_SECONDS <= 0:
        return None
    slot = random.randrange(settings.ORDER_ADMISSION_SLOTS)
    try:
        # The lock timeout is set for this lock alone; the session lock outlives the transaction.
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('lock_timeout')")
            previous = cursor.fetchone()[0]
            cursor.execute(
                "SELECT set_config('lock_timeout', %s, true)", [f"{round(settings.ADMISSION_WAIT_SECONDS * 1000)}ms"]
            )
            cursor.execute("SELECT pg_advisory_lock(%s, %s)", [ADMISSION_LOCK, slot])
            cursor.execute("SELECT set_config('lock_timeout', %s, true)", [previous])
    except DatabaseError as exc:
        if isinstance(exc.__cause__, psycopg.errors.LockNotAvailable):
            return None
        raise
    return slot


def check_service_capacity(*, in_progress: int) -> None:
    """No new report while MAX_REPORTS_IN_PROGRESS_SERVICE_WIDE wait or run: the workers are
    behind. in_progress: the service's reports queued or running (selectors.reports_in_progress)."""
    if in_progress >= settings.MAX_REPORTS_IN_PROGRESS_SERVICE_WIDE:
        logger.warning("admission: %s reports waiting or running, no new orders", in_progress)
        raise ServiceUnavailable(
            f"the service has {in_progress} reports waiting or running, as many as it takes; nothing was"
            " changed, try again in a minute",
            code="service_busy",
            retry_after=60,
        )
