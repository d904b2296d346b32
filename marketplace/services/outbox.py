"""The report outbox. An order commits its report as queued and unpublished, in one
transaction; its compute message is sent after the commit, at once if the broker answers,
else by the relay (publish_pending_reports, every OUTBOX_RELAY_SECONDS) as soon as it does.
So a broker that is down, hung or restarting loses no order and holds no request for long.

A message is claimed before it is sent (published_at set in one statement) and given back if
sending fails, so two publishers never send one report twice; a process killed between the
two leaves a claimed report, which the stuck-report sweeper queues again. Running a report
twice is harmless anyway (marketplace.services.runs)."""

import logging
import time
import uuid

from django.conf import settings
from django.db import connection
from django.utils import timezone
from kombu import pools

from marketplace import tasks
from marketplace.celery import app as celery_app
from marketplace.models import Report
from marketplace.observability.metrics import report_stage_observe

logger = logging.getLogger(__name__)

# When a send failed last in this process (time.monotonic()): requests then leave sending to
# the relay for BROKER_RETRY_AFTER_SECONDS instead of each waiting on a broker that is down.
_broker_failed_at: float | None = None
# The connection report messages are sent over, made on first use in each process. It waits on
# the broker's answers at most BROKER_CONFIRM_TIMEOUT_SECONDS: without that, giving up on a
# broker that hangs mid-connection would wait for its close to be answered, as long as it hangs.
_connection = None

_CLAIM_PENDING = """
    UPDATE marketplace_report SET published_at = %(now)s
    WHERE id IN (
        SELECT id FROM marketplace_report
        WHERE status = 'queued' AND published_at IS NULL
        ORDER BY queued_at
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    )
    RETURNING id
"""


def report_publish(report_id: uuid.UUID) -> bool:
    """Send a just-committed report's compute message, unless the broker failed a moment ago
    (the relay sends it then). Whether it was sent now."""
    started = time.perf_counter()
    try:
        return _report_publish(report_id)
    finally:
        report_stage_observe("outbox_publish", time.perf_counter() - started)


def _report_publish(report_id: uuid.UUID) -> bool:
    if _broker_failed_at is not None and time.monotonic() - _broker_failed_at < settings.BROKER_RETRY_AFTER_SECONDS:
        return False
    # In SQL: every order claims its message (the ORM's update cost more to build than to run).
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE marketplace_report SET published_at = %s"
            " WHERE id = %s AND status = 'queued' AND published_at IS NULL",
            [timezone.now(), report_id],
        )
        claimed = cursor.rowcount
    if not claimed:
        return False  # cancelled, or sent by the relay already
    return _send([report_id]) == 1


def reports_publish_pending(*, limit: int = 500) -> int:
    """The relay: send the messages of queued reports that have none yet; returns how many."""
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_PENDING, {"now": timezone.now(), "limit": limit})
        claimed = [report_id for (report_id,) in cursor.fetchall()]
    return _send(claimed)


def reports_republish(report_ids: list) -> int:
    """Send these queued reports' messages again now (the first was lost); returns how many."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE marketplace_report SET published_at = %s WHERE id = ANY(%s) AND status = 'queued' RETURNING id",
            [timezone.now(), list(report_ids)],
        )
        claimed = [report_id for (report_id,) in cursor.fetchall()]
    return _send(claimed)


def _give_back(report_ids: list) -> None:
    """Give these reports back to the outbox: the relay sends their messages."""
    Report.objects.filter(pk__in=report_ids).update(published_at=None)


def _send(report_ids: list) -> int:
    """Send claimed reports' messages; the ones not sent are given back to the outbox."""
    global _broker_failed_at
    for sent, report_id in enumerate(report_ids):
        try:
            # No retry loop here: a broker that does not answer within the connection timeout,
            # or does not confirm it has the message, is left to the relay, not waited for.
            with producers().acquire(block=True, timeout=settings.BROKER_CONFIRM_TIMEOUT_SECONDS) as producer:
                tasks.compute_report.apply_async(
                    (str(report_id),),
                    producer=producer,
                    retry=False,
                    confirm_timeout=settings.BROKER_CONFIRM_TIMEOUT_SECONDS,
                )
        except Exception:
            _broker_failed_at = time.monotonic()
            logger.warning("could not send report %s to the broker; the relay will", report_id, exc_info=True)
            _give_back(report_ids[sent:])
            return sent
    _broker_failed_at = None
    return len(report_ids)


def producers():
    """The producers of this process's connection for messages that must not wait on a hung broker."""
    global _connection
    if _connection is None:
        _connection = celery_app.connection_for_write(
            transport_options={"read_timeout": settings.BROKER_CONFIRM_TIMEOUT_SECONDS}
        )
    return pools.producers[_connection]
