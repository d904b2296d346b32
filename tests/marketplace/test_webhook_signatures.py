"""Deliveries in the Standard Webhooks format, checked with its reference library
(standardwebhooks), and the old Footfall-Signature header during its deprecation period."""

import base64
import datetime as dt
import hashlib
import hmac
import importlib
import json
import time

import pytest
from django.apps import apps
from django.utils import timezone
from standardwebhooks import Webhook, WebhookVerificationError

from marketplace import services, tasks
from marketplace.models import Role, WebhookDelivery, WebhookEndpoint
from tests.factories import order_body
from tests.webhook_receivers import Receiver

HOOKS = "/api/v1/webhooks/"
secrets_migration = importlib.import_module("marketplace.migrations.0025_webhook_secret_whsec")


@pytest.fixture
def receiver(settings):
    settings.WEBHOOK_ALLOW_HTTP = True
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    endpoint = Receiver()
    yield endpoint
    endpoint.close()


@pytest.fixture
def owner(tenant, client_for, receiver):
    return client_for(tenant, Role.OWNER)


def report_finishes(owner, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = owner.post("/api/v1/reports/", order_body(), format="json")
    assert response.status_code == 201, response.content


def legacy_is_genuine(secret: str, header: str, body: bytes) -> bool:
    """The check docs/webhooks.md told buyers to make before Standard Webhooks."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


def test_a_delivery_verifies_with_the_standard_webhooks_library(
    owner, city, receiver, django_capture_on_commit_callbacks
):
    hook = owner.post(HOOKS, {"url": receiver.url, "events": ["report.succeeded"]}, format="json").json()
    assert hook["secret"].startswith("whsec_") and len(base64.b64decode(hook["secret"][6:])) == 32

    report_finishes(owner, django_capture_on_commit_callbacks)

    [delivery] = receiver.received
    headers, body = delivery["headers"], delivery["body"]
    payload = Webhook(hook["secret"]).verify(body, headers)
    assert payload == json.loads(body) and payload["type"] == "report.succeeded"
    assert headers["webhook-id"] == payload["id"] == str(WebhookDelivery.objects.get().pk)
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 5
    with pytest.raises(WebhookVerificationError):
        Webhook(hook["secret"]).verify(body.replace(b"succeeded", b"failed"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + base64.b64encode(b"another key of thirty-two bytes!").decode()).verify(body, headers)


def test_a_retry_keeps_the_message_id_and_signs_a_fresh_timestamp(
    owner, city, receiver, django_capture_on_commit_callbacks
):
    hook = owner.post(HOOKS, {"url": receiver.url, "events": ["report.succeeded"]}, format="json").json()
    receiver.answers.append(500)
    report_finishes(owner, django_capture_on_commit_callbacks)
    time.sleep(1.05 - time.time() % 1)  # into the next second: the retry's timestamp must differ

    WebhookDelivery.objects.update(next_attempt_at=timezone.now() - dt.timedelta(minutes=1))
    assert tasks.sweep_webhook_deliveries() == 1

    first, retry = receiver.received
    assert first["headers"]["webhook-id"] == retry["headers"]["webhook-id"]
    assert int(retry["headers"]["webhook-timestamp"]) > int(first["headers"]["webhook-timestamp"])
    assert first["body"] == retry["body"]
    for attempt in (first, retry):
        Webhook(hook["secret"]).verify(attempt["body"], attempt["headers"])
    assert WebhookDelivery.objects.get().delivered_at is not None


def test_the_old_headers_are_sent_until_the_deprecation_day(
    owner, city, receiver, settings, django_capture_on_commit_callbacks
):
    hook = owner.post(HOOKS, {"url": receiver.url, "events": ["report.succeeded"]}, format="json").json()
    key = base64.b64decode(hook["secret"].removeprefix("whsec_"))
    settings.WEBHOOK_LEGACY_HEADERS_UNTIL = timezone.now().date() + dt.timedelta(days=1)
    report_finishes(owner, django_capture_on_commit_callbacks)
    settings.WEBHOOK_LEGACY_HEADERS_UNTIL = timezone.now().date()
    report_finishes(owner, django_capture_on_commit_callbacks)

    during, after = receiver.received
    header = during["headers"]["Footfall-Signature"]
    parts = dict(item.split("=", 1) for item in header.split(","))
    assert parts["t"] == during["headers"]["webhook-timestamp"]
    assert parts["v1"] == hmac.new(key, f"{parts['t']}.".encode() + during["body"], hashlib.sha256).hexdigest()
    assert during["headers"]["Footfall-Delivery"] == during["headers"]["webhook-id"]
    assert "Footfall-Signature" not in after["headers"] and "Footfall-Delivery" not in after["headers"]
    Webhook(hook["secret"]).verify(after["body"], after["headers"])


def test_an_endpoint_registered_before_keeps_its_secret_and_verifies_both_ways(tenant, receiver, settings):
    """The 0025 migration: an old hex secret becomes whsec_<base64 of its bytes>, the same key."""
    settings.WEBHOOK_LEGACY_HEADERS_UNTIL = timezone.now().date() + dt.timedelta(days=1)
    old_secret = "ab" * 32  # as secrets.token_hex(32) made them
    endpoint = WebhookEndpoint.objects.create(
        tenant=tenant, url=receiver.url, events=["report.succeeded"], secret=old_secret
    )

    secrets_migration.secrets_to_whsec(apps, None)

    endpoint.refresh_from_db()
    assert endpoint.secret == "whsec_" + base64.b64encode(old_secret.encode()).decode()
    delivery = WebhookDelivery.objects.create(
        endpoint=endpoint,
        event="report.succeeded",
        payload={"type": "report.succeeded"},
        next_attempt_at=timezone.now(),
    )
    services.webhook_deliver(delivery_id=str(delivery.pk))
    [received] = receiver.received
    assert legacy_is_genuine(old_secret, received["headers"]["Footfall-Signature"], received["body"])
    Webhook(endpoint.secret).verify(received["body"], received["headers"])
    Webhook(old_secret.encode()).verify(received["body"], received["headers"])  # the buyer's copy, as bytes

    secrets_migration.secrets_to_plain(apps, None)
    endpoint.refresh_from_db()
    assert endpoint.secret == old_secret
