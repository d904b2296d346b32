"""What /metrics reads from the database and the broker at scrape time. Each read is bounded
(a statement timeout, a broker timeout) and may fail on its own: the scrape then leaves its
metrics out and says so (footfall_metrics_source_up), it never fails."""

import contextlib
import dataclasses
import datetime as dt
from collections.abc import Iterator

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Min, Q, Sum
from django.utils import timezone

from billing.models import UsageSync
from marketplace.celery import app as celery_app
from marketplace.models import Product, Report, WebhookDelivery


@dataclasses.dataclass(frozen=True)
class QueueDepth:
    queue: str
    messages: int
    consumers: int


@contextlib.contextmanager
def statement_timeout() -> Iterator[None]:
    """Every query inside takes at most METRICS_STATEMENT_TIMEOUT_MS; the caller's own timeout
    is back after it (a setting local to the transaction or savepoint: restored on the way
    out, or undone with the savepoint when a query fails)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('statement_timeout')")
        previous = cursor.fetchone()[0]
        limit = f"{settings.METRICS_STATEMENT_TIMEOUT_MS}ms"
        cursor.execute("SELECT set_config('statement_timeout', %s, true)", [limit])
        yield
        cursor.execute("SELECT set_config('statement_timeout', %s, true)", [previous])


def reports_by_product_and_status() -> dict[tuple[str, str], int]:
    # Grouped on the report_product_status index alone; the few product codes are read apart.
    rows = Report.objects.order_by().values("product_id", "status").annotate(count=Count("product_id"))
    codes = dict(Product.objects.values_list("pk", "code"))
    return {(codes[row["product_id"]], row["status"]): row["count"] for row in rows}


def oldest_queued_report_age_seconds() -> float:
    """How long the longest-waiting queued report has waited since it was (re-)queued; 0 if none."""
    oldest = Report.objects.filter(status=Report.Status.QUEUED).aggregate(oldest=Min("queued_at"))["oldest"]
    return _age_seconds(oldest)


def usage_sync_lag() -> tuple[int, float]:
    """Usage lines not yet sent to Stripe, and the age of the oldest of them (0 if none)."""
    unsent = [UsageSync.State.PENDING, UsageSync.State.SENDING]
    pending = UsageSync.objects.filter(state__in=unsent).aggregate(count=Count("pk"), oldest=Min("line__created_at"))
    return pending["count"], _age_seconds(pending["oldest"])


def webhook_delivery_totals() -> dict[str, int]:
    """Deliveries by state (delivered, given_up, pending) and the attempts that failed."""
    totals = WebhookDelivery.objects.aggregate(
        delivered=Count("pk", filter=Q(delivered_at__isnull=False)),
        given_up=Count("pk", filter=Q(gave_up_at__isnull=False)),
        pending=Count("pk", filter=Q(delivered_at__isnull=True, gave_up_at__isnull=True)),
        attempts=Sum("attempts"),
    )
    # Every attempt but a delivered delivery's last one failed.
    totals["failed_attempts"] = (totals.pop("attempts") or 0) - totals["delivered"]
    return totals


def report_outbox_lag_seconds() -> float:
    """The age of the oldest queued report whose message is not sent yet (the outbox,
    marketplace/services/outbox.py); 0 if none. Among the queued reports, on the (status, queued_at) index."""
    unsent = Report.objects.filter(status=Report.Status.QUEUED, published_at__isnull=True)
    return _age_seconds(unsent.aggregate(oldest=Min("queued_at"))["oldest"])


def queue_depths() -> list[QueueDepth]:
    """Messages waiting in, and consumers of, each Celery queue: a passive declare (it creates
    nothing) over one short-lived connection with short timeouts; raises if the broker fails."""
    timeout = settings.METRICS_BROKER_TIMEOUT_SECONDS
    broker = celery_app.connection_for_read(
        connect_timeout=timeout, transport_options={"read_timeout": timeout, "write_timeout": timeout}
    )
    with broker:
        broker.ensure_connection(max_retries=0, timeout=timeout)  # one try, no back-off sleep
        channel = broker.channel()
        depths = []
        for queue in celery_app.conf.task_queues:
            try:
                _, messages, consumers = channel.queue_declare(queue=queue.name, passive=True)
            except broker.channel_errors:  # not declared yet (no worker nor task so far): empty
                channel = broker.channel()  # the broker closed the one that asked
                messages, consumers = 0, 0
            depths.append(QueueDepth(queue=queue.name, messages=messages, consumers=consumers))
        return depths


def _age_seconds(moment: dt.datetime | None) -> float:
    return max((timezone.now() - moment).total_seconds(), 0.0) if moment else 0.0
