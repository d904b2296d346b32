"""Buyer webhooks: signed, retried with backoff, logged, and never in the report's way."""

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from marketplace.models import AuditEvent, Report, Role, WebhookDelivery
from tests.errors import assert_error
from tests.factories import order_body

HOOKS = "/api/v1/webhooks/"
ORDER = order_body()


@pytest.fixture
def receiver():
    """A buyer's HTTP endpoint on localhost: answers with the queued statuses (then 200), keeps what it got."""
    received, answers = [], []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"headers": dict(self.headers), "body": body})
            self.send_response(answers.pop(0) if answers else 200)
            self.end_headers()
            self.wfile.write(b"thanks")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hooks", received, answers
    server.shutdown()


@pytest.fixture
def owner(tenant, client_for, settings):
    settings.WEBHOOK_ALLOW_HTTP = True  # the receiver is plain HTTP on localhost
    return client_for(tenant, Role.OWNER)


def verify(secret: str, header: str, body: bytes) -> bool:
    """The check docs/webhooks.md tells buyers to make."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


def order(client, django_capture_on_commit_callbacks) -> dict:
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/api/v1/reports/", ORDER, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_a_succeeded_report_is_delivered_signed(owner, city, receiver, django_capture_on_commit_callbacks):
    url, received, _ = receiver
    hook = owner.post(HOOKS, {"url": url, "events": ["report.succeeded"]}, format="json").json()

    report = order(owner, django_capture_on_commit_callbacks)

    [delivery] = received
    payload = json.loads(delivery["body"])
    assert payload["type"] == "report.succeeded" and payload["data"]["report"]["id"] == report["id"]
    assert verify(hook["secret"], delivery["headers"]["Footfall-Signature"], delivery["body"])
    assert not verify("another secret", delivery["headers"]["Footfall-Signature"], delivery["body"])
    logged = owner.get(f"{HOOKS}{hook['id']}/deliveries/").json()["results"]
    assert [(item["last_status_code"], item["attempts"], bool(item["delivered_at"])) for item in logged] == [
        (200, 1, True)
    ]
    assert "secret" not in owner.get(f"{HOOKS}{hook['id']}/").json()


def test_a_failing_endpoint_is_tried_again_and_then_given_up(owner, city, receiver, django_capture_on_commit_callbacks):
    url, received, answers = receiver
    owner.post(HOOKS, {"url": url, "events": ["report.succeeded"]}, format="json")
    answers += [500, 503]

    order(owner, django_capture_on_commit_callbacks)  # tasks run eagerly: retries follow at once

    delivery = WebhookDelivery.objects.get()
    assert (delivery.attempts, delivery.last_status_code, delivery.delivered_at is not None) == (3, 200, True)
    assert len(received) == 3

    answers += [500] * 20
    order(owner, django_capture_on_commit_callbacks)
    gave_up = WebhookDelivery.objects.exclude(pk=delivery.pk).get()
    assert gave_up.attempts == 8 and gave_up.gave_up_at is not None and gave_up.delivered_at is None


def test_an_unreachable_endpoint_does_not_hold_the_report_back(owner, city, django_capture_on_commit_callbacks):
    owner.post(HOOKS, {"url": "http://127.0.0.1:9/nothing-listens", "events": ["report.succeeded"]}, format="json")

    report = order(owner, django_capture_on_commit_callbacks)

    assert Report.objects.get(pk=report["id"]).status == Report.Status.SUCCEEDED
    assert "ConnectionError" in WebhookDelivery.objects.get().last_response


def test_webhooks_must_be_https(tenant, client_for):
    response = client_for(tenant, Role.OWNER).post(
        HOOKS, {"url": "http://buyer.example/hook", "events": ["report.failed"]}, format="json"
    )

    assert_error(response, 400, "webhook_not_https", attr="url")


def test_registering_and_deleting_are_audited(owner, tenant):
    hook = owner.post(HOOKS, {"url": "https://buyer.example/hook", "events": ["report.failed"]}, format="json").json()

    assert owner.delete(f"{HOOKS}{hook['id']}/").status_code == 204
    actions = set(AuditEvent.objects.filter(tenant=tenant).values_list("action", flat=True))
    assert {"webhook.created", "webhook.deleted"} <= actions
