"""Buyer webhooks: endpoints, the events queued when a report finishes, and their signed delivery."""

import hashlib
import hmac
import json
import logging
import secrets
import uuid
from functools import partial

import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from marketplace import tasks
from marketplace.exceptions import ServiceError
from marketplace.models import Report, WebhookDelivery, WebhookEndpoint
from marketplace.services.audit import audit
from marketplace.services.keys import Principal

logger = logging.getLogger(__name__)


WEBHOOK_SECRET_BYTES = 32
WEBHOOK_MAX_ATTEMPTS = 8
WEBHOOK_TIMEOUT_SECONDS = 10
WEBHOOK_RESPONSE_KEPT = 1000


def webhook_endpoint_create(*, principal: Principal, url: str, events: list[str]) -> WebhookEndpoint:
    """Register an endpoint; its secret is returned now and never shown again."""
    if not url.startswith("https://") and not settings.WEBHOOK_ALLOW_HTTP:
        raise ServiceError("a webhook URL must use https://", code="webhook_not_https", field="url")
    unknown = [event for event in events if event not in WebhookEndpoint.Event.values]
    if unknown or not events:
        raise ServiceError(
            f"events must be some of {', '.join(WebhookEndpoint.Event.values)}", code="unknown_event", field="events"
        )
    endpoint = WebhookEndpoint.objects.create(
        tenant=principal.tenant, url=url, events=sorted(set(events)), secret=secrets.token_hex(WEBHOOK_SECRET_BYTES)
    )
    audit(tenant=principal.tenant, actor=principal.api_key, action="webhook.created", target=url)
    return endpoint


def webhook_endpoint_delete(*, principal: Principal, endpoint: WebhookEndpoint) -> None:
    audit(tenant=principal.tenant, actor=principal.api_key, action="webhook.deleted", target=endpoint.url)
    endpoint.delete()


def webhook_signature(*, secret: str, timestamp: int, body: bytes) -> str:
    """The Footfall-Signature header: t=<unix time>,v1=<HMAC-SHA256 of "<t>.<body>"> (docs/webhooks.md)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def webhooks_queue(report: Report) -> None:
    event = {Report.Status.SUCCEEDED: "report.succeeded", Report.Status.FAILED: "report.failed"}.get(report.status)
    if event is None:
        return
    for endpoint in WebhookEndpoint.objects.filter(tenant_id=report.tenant_id, is_active=True):
        if event not in endpoint.events:
            continue
        delivery = WebhookDelivery.objects.create(endpoint=endpoint, event=event, payload={})
        delivery.payload = {
            "id": str(delivery.pk),
            "type": event,
            "created_at": delivery.created_at.isoformat(),
            "data": {
                "report": {
                    "id": str(report.pk),
                    "product": report.product.code,
                    "status": report.status,
                    "finished_at": report.finished_at.isoformat() if report.finished_at else None,
                    "error": report.error or None,
                }
            },
        }
        delivery.save(update_fields=["payload"])
        transaction.on_commit(partial(_webhook_enqueue, delivery.pk))


def _webhook_enqueue(delivery_id: uuid.UUID, countdown: int = 0) -> None:
    try:
        tasks.deliver_webhook.apply_async((str(delivery_id),), countdown=countdown)
    except Exception:  # the broker may be down: the delivery waits in the database
        logger.warning("could not queue webhook delivery %s", delivery_id, exc_info=True)


def webhook_deliver(*, delivery_id: str) -> int | None:
    """Send a delivery once; returns seconds to wait before the next try, or None when done."""
    delivery = WebhookDelivery.objects.select_related("endpoint").filter(pk=delivery_id).first()
    if delivery is None or delivery.delivered_at or delivery.gave_up_at:
        return None
    body = json.dumps(delivery.payload, separators=(",", ":")).encode()
    timestamp = int(timezone.now().timestamp())
    headers = {
        "Content-Type": "application/json",
        "Footfall-Signature": webhook_signature(secret=delivery.endpoint.secret, timestamp=timestamp, body=body),
        "Footfall-Delivery": str(delivery.pk),
    }
    delivery.attempts += 1
    try:
        response = requests.post(delivery.endpoint.url, data=body, headers=headers, timeout=WEBHOOK_TIMEOUT_SECONDS)
        delivery.last_status_code, delivery.last_response = response.status_code, response.text[:WEBHOOK_RESPONSE_KEPT]
        taken = 200 <= response.status_code < 300
    except requests.RequestException as exc:
        delivery.last_status_code, delivery.last_response = None, f"{type(exc).__name__}: {exc}"[:WEBHOOK_RESPONSE_KEPT]
        taken = False
    now = timezone.now()
    if taken:
        delivery.delivered_at = now
    elif delivery.attempts >= WEBHOOK_MAX_ATTEMPTS:
        delivery.gave_up_at = now
    delivery.save()
    if taken or delivery.gave_up_at:
        return None
    return min(10 * 2 ** (delivery.attempts - 1), 3600)  # 10 s, 20 s, 40 s, ... at most an hour
