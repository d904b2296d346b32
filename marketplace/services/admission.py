"""Admission: the service takes what it can check and compute, and answers 503 with
Retry-After early, instead of letting requests and reports queue without bound."""

import contextlib
import logging
from collections.abc import Iterator

from django.conf import settings
from django.db import DatabaseError, connection

from marketplace.exceptions import ServiceUnavailable
from marketplace.models import Report

logger = logging.getLogger(__name__)

# The first key of the advisory locks that are the admission slots (the second is the slot).
ADMISSION_LOCK = 0x4144  # "AD"


@contextlib.contextmanager
def order_admitted() -> Iterator[None]:
    """Hold one of ORDER_ADMISSION_SLOTS, service-wide, while an order or quote is checked
    (measuring areas and periods is the costly part of a request); none free: 503."""
    with connection.cursor() as cursor:
        # Session locks: PostgreSQL frees them if this process dies holding one.
        cursor.execute(
            "SELECT slot FROM generate_series(0, %s - 1) AS slot WHERE pg_try_advisory_lock(%s, slot) LIMIT 1",
            [settings.ORDER_ADMISSION_SLOTS, ADMISSION_LOCK],
        )
        row = cursor.fetchone()
    if row is None:
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
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [ADMISSION_LOCK, row[0]])


def check_service_capacity() -> None:
    """No new report while MAX_REPORTS_IN_PROGRESS_SERVICE_WIDE wait or run: the workers are behind."""
    waiting = Report.objects.filter(status__in=[Report.Status.QUEUED, Report.Status.RUNNING]).count()
    if waiting >= settings.MAX_REPORTS_IN_PROGRESS_SERVICE_WIDE:
        logger.warning("admission: %s reports waiting or running, no new orders", waiting)
        raise ServiceUnavailable(
            f"the service has {waiting} reports waiting or running, as many as it takes; nothing was"
            " changed, try again in a minute",
            code="service_busy",
            retry_after=60,
        )
