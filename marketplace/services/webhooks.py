"""Buyer webhooks: endpoints, the events queued when a report finishes, and their signed delivery.

Every delivery is a row (WebhookDelivery) with the time its next try is due; the queue only
carries its id. A try claims one of its tenant's in-flight slots (WEBHOOK_MAX_IN_FLIGHT) for
the length of the deadline, so one tenant's slow endpoints never take more than those; a
delivery over the cap waits, due, until a slot frees (the finishing delivery queues the next)
or the sweeper finds it. Failed tries are retried with a capped exponential backoff for a day
(docs/webhooks.md); a task that is lost, or a wait too long to leave with the broker, is
queued again by the sweeper. Where a delivery may go is decided in webhook_destinations."""

import base64
import datetime as dt
import hashlib
import hmac
import json
import logging
import secrets
import uuid
from collections import Counter
from functools import partial

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from marketplace import tasks
from marketplace.exceptions import Conflict, ServiceError
from marketplace.models import Report, WebhookDelivery, WebhookEndpoint
from marketplace.services import outbox
from marketplace.services.audit import audit
from marketplace.services.keys import Principal
from marketplace.services.webhook_destinations import (
    DeliveryFailed,
    DestinationRefused,
    destination_check,
    destination_post,
)

logger = logging.getLogger(__name__)


WEBHOOK_SECRET_BYTES = 32
# Standard Webhooks (standardwebhooks.com) shows a secret as this prefix and the key's bytes in base64.
SECRET_PREFIX = "whsec_"
WEBHOOK_RESPONSE_KEPT = 1000  # bytes of an answer kept for the deliveries log; the rest is not read
TEST_EVENT = "webhook.test"
# Retries: the wait after the n-th failed try is 30 s * 2^(n-1), at most 4 h; the 15th failure
# gives up. The 14 waits add up to 24 h 15 min (RETRY_SCHEDULE, documented in docs/webhooks.md).
WEBHOOK_MAX_ATTEMPTS = 15
RETRY_FIRST_WAIT_SECONDS = 30
RETRY_MAX_WAIT_SECONDS = 4 * 3600
# A wait up to this long is left to the broker (a countdown); a longer one to the sweeper, since
# the broker holds a waiting message unacknowledged and RabbitMQ ends consumers that do so for long.
COUNTDOWN_MAX_SECONDS = 300
# A try holds its slot for the deadline and this much more; a worker killed mid-try frees it then.
SLOT_MARGIN_SECONDS = 30
# The sweeper queues a due delivery once it has been due this long without being sent.
SWEEP_GRACE_SECONDS = 30
SWEEP_BATCH = 1000
# Tries run at most this early (clocks of two hosts).
EARLY_TOLERANCE = dt.timedelta(seconds=1)
# At registration, a host name that takes longer than this to resolve is accepted unchecked
# (deliveries check it again).
RESOLVE_AT_REGISTRATION_SECONDS = 3.0
# The first key of the advisory lock that serializes a tenant's webhook slots and endpoints
# (the second is the tenant id).
TENANT_WEBHOOK_LOCK = 0x5748  # "WH"


def retry_wait_seconds(attempts: int) -> int:
    """The wait after the attempts-th failed try."""
    return min(RETRY_FIRST_WAIT_SECONDS * 2 ** (attempts - 1), RETRY_MAX_WAIT_SECONDS)


RETRY_SCHEDULE = [retry_wait_seconds(n) for n in range(1, WEBHOOK_MAX_ATTEMPTS)]


def _lock_tenant(tenant_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [TENANT_WEBHOOK_LOCK, tenant_id])


def webhook_endpoint_create(*, principal: Principal, url: str, events: list[str]) -> WebhookEndpoint:
    """Register an endpoint; its secret is returned now and never shown again."""
    unknown = [event for event in events if event not in WebhookEndpoint.Event.values]
    if unknown or not events:
        raise ServiceError(
            f"events must be some of {', '.join(WebhookEndpoint.Event.values)}", code="unknown_event", field="events"
        )
    try:
        destination_check(url, timeout=min(RESOLVE_AT_REGISTRATION_SECONDS, settings.WEBHOOK_DEADLINE_SECONDS))
    except DestinationRefused as refused:
        raise ServiceError(refused.message, code=refused.code, field="url") from None
    with transaction.atomic():
        _lock_tenant(principal.tenant.pk)
        registered = WebhookEndpoint.objects.filter(tenant=principal.tenant).count()
        if registered >= settings.WEBHOOK_MAX_ENDPOINTS:
            raise Conflict(
                f"an organisation may register at most {settings.WEBHOOK_MAX_ENDPOINTS} webhook endpoints and"
                f" has {registered}: delete one first",
                code="webhook_endpoints_limit",
            )
        endpoint = WebhookEndpoint.objects.create(
            tenant=principal.tenant,
            url=url,
            events=sorted(set(events)),
            secret=SECRET_PREFIX + base64.b64encode(secrets.token_bytes(WEBHOOK_SECRET_BYTES)).decode(),
        )
        audit(tenant=principal.tenant, actor=principal.api_key, action="webhook.created", target=url)
    return endpoint


def webhook_endpoint_delete(*, principal: Principal, endpoint: WebhookEndpoint) -> None:
    audit(tenant=principal.tenant, actor=principal.api_key, action="webhook.deleted", target=endpoint.url)
    endpoint.delete()


def webhook_signing_key(secret: str) -> bytes:
    """The HMAC key of an endpoint's whsec_ secret: the bytes it encodes."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)


def webhook_signature(*, key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The webhook-signature header of Standard Webhooks: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">."""
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return f"v1,{base64.b64encode(digest).decode()}"


def webhook_legacy_signature(*, key: bytes, timestamp: int, body: bytes) -> str:
    """The deprecated Footfall-Signature header: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">,
    sent until WEBHOOK_LEGACY_HEADERS_UNTIL (docs/webhooks.md)."""
    digest = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def webhook_headers(*, secret: str, message_id: str, body: bytes, now: dt.datetime) -> dict[str, str]:
    """The headers of one try: Standard Webhooks', and during the deprecation period the old ones."""
    key = webhook_signing_key(secret)
    timestamp = int(now.timestamp())
    headers = {
        "Content-Type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": webhook_signature(key=key, message_id=message_id, timestamp=timestamp, body=body),
    }
    if now.date() < settings.WEBHOOK_LEGACY_HEADERS_UNTIL:
        headers["Footfall-Signature"] = webhook_legacy_signature(key=key, timestamp=timestamp, body=body)
        headers["Footfall-Delivery"] = message_id
    return headers


def _delivery_create(*, endpoint: WebhookEndpoint, event: str, data: dict) -> WebhookDelivery:
    """A delivery due now, queued after the transaction commits."""
    delivery = WebhookDelivery.objects.create(
        endpoint=endpoint, event=event, payload={}, next_attempt_at=timezone.now()
    )
    delivery.payload = {
        "id": str(delivery.pk),
        "type": event,
        "created_at": delivery.created_at.isoformat(),
        "data": data,
    }
    delivery.save(update_fields=["payload"])
    transaction.on_commit(partial(_webhook_enqueue, delivery.pk))
    return delivery


def webhooks_queue(report: Report, *, endpoint_ids: list[int]) -> None:
    """A delivery of the report's event to each of these endpoints (its tenant's active ones)
    that takes it."""
    event = {Report.Status.SUCCEEDED: "report.succeeded", Report.Status.FAILED: "report.failed"}.get(report.status)
    if event is None:
        return
    for endpoint in WebhookEndpoint.objects.filter(pk__in=endpoint_ids).order_by("pk"):
        if event not in endpoint.events:
            continue
        _delivery_create(
            endpoint=endpoint,
            event=event,
            data={
                "report": {
                    "id": str(report.pk),
                    "product": report.product.code,
                    "status": report.status,
                    "finished_at": report.finished_at.isoformat() if report.finished_at else None,
                    "error": report.error or None,
                }
            },
        )


def webhook_test_send(*, principal: Principal, endpoint: WebhookEndpoint) -> WebhookDelivery:
    """Queue a webhook.test event to the endpoint, signed like any other; tried once."""
    with transaction.atomic():
        delivery = _delivery_create(
            endpoint=endpoint,
            event=TEST_EVENT,
            data={"endpoint": {"id": endpoint.pk, "url": endpoint.url}},
        )
        audit(tenant=principal.tenant, actor=principal.api_key, action="webhook.tested", target=endpoint.url)
    return delivery


def _webhook_enqueue(delivery_id: uuid.UUID, countdown: int = 0) -> None:
    try:
        # Over the outbox's connection: a broker that hangs holds no request or worker for long.
        with outbox.producers().acquire(block=True, timeout=settings.BROKER_CONFIRM_TIMEOUT_SECONDS) as producer:
            tasks.deliver_webhook.apply_async(
                (str(delivery_id),),
                countdown=countdown,
                producer=producer,
                retry=False,
                confirm_timeout=settings.BROKER_CONFIRM_TIMEOUT_SECONDS,
            )
    except Exception:  # the broker may be down: the delivery waits in the database for the sweeper
        logger.warning("could not queue webhook delivery %s; the sweeper will", delivery_id, exc_info=True)


def _claim(delivery_id: str) -> WebhookDelivery | None:
    """Take the delivery and a slot of its tenant for one try, or None: done, not due, being
    sent by another worker, or its tenant's slots all taken (it waits, still due)."""
    pending = WebhookDelivery.objects.filter(pk=delivery_id, delivered_at=None, gave_up_at=None)
    tenant_id = pending.values_list("endpoint__tenant_id", flat=True).first()
    if tenant_id is None:
        return None
    now = timezone.now()
    with transaction.atomic():
        _lock_tenant(tenant_id)
        delivery = pending.select_for_update(of=("self",)).select_related("endpoint").first()
        if delivery is None or delivery.next_attempt_at is None or delivery.next_attempt_at > now + EARLY_TOLERANCE:
            return None
        if delivery.sending_until and delivery.sending_until > now:
            return None
        in_flight = WebhookDelivery.objects.filter(endpoint__tenant_id=tenant_id, sending_until__gt=now).count()
        if in_flight >= settings.WEBHOOK_MAX_IN_FLIGHT:
            logger.info("webhook delivery %s waits: tenant %s has %d in flight", delivery.pk, tenant_id, in_flight)
            return None
        delivery.attempts += 1
        delivery.sending_until = now + dt.timedelta(seconds=settings.WEBHOOK_DEADLINE_SECONDS + SLOT_MARGIN_SECONDS)
        delivery.save(update_fields=["attempts", "sending_until", "updated_at"])
    return delivery


def _send(delivery: WebhookDelivery) -> tuple[int | None, str]:
    """One try: the status (None without an answer) and the start of the answer or the error."""
    body = json.dumps(delivery.payload, separators=(",", ":")).encode()
    # The message id is the delivery's, the same on every try; the timestamp is this try's.
    headers = webhook_headers(
        secret=delivery.endpoint.secret, message_id=str(delivery.pk), body=body, now=timezone.now()
    )
    try:
        answer = destination_post(
            delivery.endpoint.url,
            body=body,
            headers=headers,
            deadline=settings.WEBHOOK_DEADLINE_SECONDS,
            keep=WEBHOOK_RESPONSE_KEPT,
        )
    except DestinationRefused as refused:
        return None, f"Refused: {refused.message}"
    except DeliveryFailed as failed:
        return None, str(failed)
    return answer.status, answer.body_start.decode("utf-8", errors="replace")


def webhook_deliver(*, delivery_id: str) -> None:
    """One try of a delivery, if it is due and its tenant has a free slot; then the next try
    is scheduled (or the delivery is done), and a waiting delivery of the tenant is queued."""
    delivery = _claim(delivery_id)
    if delivery is None:
        return
    status, answer = _send(delivery)
    now = timezone.now()
    outcome = {
        "last_status_code": status,
        "last_response": answer[:WEBHOOK_RESPONSE_KEPT].replace("\x00", "\ufffd"),  # PostgreSQL text has no NUL
        "sending_until": None,
        "updated_at": now,
    }
    wait = None
    if status is not None and 200 <= status < 300:
        outcome |= {"delivered_at": now, "next_attempt_at": None}
    elif delivery.attempts >= WEBHOOK_MAX_ATTEMPTS or delivery.event == TEST_EVENT:
        outcome |= {"gave_up_at": now, "next_attempt_at": None}
    else:
        wait = retry_wait_seconds(delivery.attempts)
        outcome["next_attempt_at"] = now + dt.timedelta(seconds=wait)
    if not WebhookDelivery.objects.filter(pk=delivery.pk).update(**outcome):
        return  # its endpoint was deleted meanwhile
    if wait is not None and wait <= COUNTDOWN_MAX_SECONDS:
        _webhook_enqueue(delivery.pk, countdown=wait)
    _queue_waiting(tenant_id=delivery.endpoint.tenant_id, free=1)


def _due() -> Q:
    now = timezone.now()
    return Q(delivered_at=None, gave_up_at=None, next_attempt_at__lte=now) & (
        Q(sending_until=None) | Q(sending_until__lte=now)
    )


def _queue_waiting(*, tenant_id: int, free: int) -> None:
    """Queue up to free of the tenant's due deliveries, the longest due first."""
    waiting = (
        WebhookDelivery.objects.filter(_due(), endpoint__tenant_id=tenant_id)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:free]
    )
    for delivery_id in waiting:
        _webhook_enqueue(delivery_id)


def webhook_deliveries_requeue() -> int:
    """The sweeper (beat, every minute): queue what has been due for SWEEP_GRACE_SECONDS and was
    not sent (a lost task, a long wait, a worker killed mid-try, a delivery over its tenant's
    cap), at most each tenant's free slots; returns how many were queued."""
    now = timezone.now()
    due = list(  # each tenant's longest due first, no more than its slots: a backlog starves no one
        WebhookDelivery.objects.filter(_due(), next_attempt_at__lte=now - dt.timedelta(seconds=SWEEP_GRACE_SECONDS))
        .annotate(turn=Window(RowNumber(), partition_by=F("endpoint__tenant_id"), order_by=F("next_attempt_at").asc()))
        .filter(turn__lte=settings.WEBHOOK_MAX_IN_FLIGHT)
        .order_by("next_attempt_at")
        .values_list("pk", "endpoint__tenant_id")[:SWEEP_BATCH]
    )
    in_flight = Counter(
        WebhookDelivery.objects.filter(
            sending_until__gt=now, endpoint__tenant_id__in={tenant for _, tenant in due}
        ).values_list("endpoint__tenant_id", flat=True)
    )
    queued = 0
    for delivery_id, tenant_id in due:
        if in_flight[tenant_id] >= settings.WEBHOOK_MAX_IN_FLIGHT:
            continue
        in_flight[tenant_id] += 1
        _webhook_enqueue(delivery_id)
        queued += 1
    return queued
