"""Buyer webhooks: signed, retried with backoff for a day, logged, capped per tenant, and never
in the report's way. Where they may be sent: test_webhook_destinations.py."""

import datetime as dt
import json
import threading

import pytest
from django.db import connection
from django.utils import timezone
from standardwebhooks import Webhook, WebhookVerificationError

from marketplace import services, tasks
from marketplace.celery import app as celery_app
from marketplace.models import AuditEvent, Report, Role, WebhookDelivery, WebhookEndpoint
from marketplace.services import webhooks
from tests.errors import assert_error
from tests.factories import granted_tenant, order_body
from tests.webhook_receivers import Receiver

HOOKS = "/api/v1/webhooks/"
ORDER = order_body()


@pytest.fixture
def local_receivers(settings):
    """Deliveries may go to fakes on 127.0.0.1 over plain HTTP: the development allow-list."""
    settings.WEBHOOK_ALLOW_HTTP = True
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]


@pytest.fixture
def receiver(local_receivers):
    """A buyer's HTTP endpoint on localhost: answers with the queued statuses (then 200), keeps what it got."""
    endpoint = Receiver()
    yield endpoint.url, endpoint.received, endpoint.answers
    endpoint.close()


@pytest.fixture
def owner(tenant, client_for, local_receivers):
    return client_for(tenant, Role.OWNER)


def verify(secret: str, headers: dict, body: bytes) -> bool:
    """The check docs/webhooks.md tells buyers to make, with the Standard Webhooks library."""
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


def order(client, django_capture_on_commit_callbacks) -> dict:
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/api/v1/reports/", ORDER, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def time_passes() -> int:
    """The next tries of every pending delivery fall due (and long enough ago for the sweeper),
    and the sweeper runs (tasks run eagerly here); returns how many it queued."""
    WebhookDelivery.objects.filter(delivered_at=None, gave_up_at=None).update(
        next_attempt_at=timezone.now() - dt.timedelta(minutes=1)
    )
    return tasks.sweep_webhook_deliveries()


def test_a_succeeded_report_is_delivered_signed(owner, city, receiver, django_capture_on_commit_callbacks):
    url, received, _ = receiver
    hook = owner.post(HOOKS, {"url": url, "events": ["report.succeeded"]}, format="json").json()

    report = order(owner, django_capture_on_commit_callbacks)

    [delivery] = received
    payload = json.loads(delivery["body"])
    assert payload["type"] == "report.succeeded" and payload["data"]["report"]["id"] == report["id"]
    assert verify(hook["secret"], delivery["headers"], delivery["body"])
    assert not verify("whsec_YW5vdGhlciBzZWNyZXQ=", delivery["headers"], delivery["body"])
    logged = owner.get(f"{HOOKS}{hook['id']}/deliveries/").json()["results"]
    assert [(item["last_status_code"], item["attempts"], bool(item["delivered_at"])) for item in logged] == [
        (200, 1, True)
    ]
    assert logged[0]["next_attempt_at"] is None
    assert "secret" not in owner.get(f"{HOOKS}{hook['id']}/").json()


def test_a_failing_endpoint_is_tried_again_with_backoff_and_then_given_up(
    owner, city, receiver, django_capture_on_commit_callbacks
):
    url, received, answers = receiver
    owner.post(HOOKS, {"url": url, "events": ["report.succeeded"]}, format="json")
    answers += [500, 503]

    order(owner, django_capture_on_commit_callbacks)

    delivery = WebhookDelivery.objects.get()
    assert (delivery.attempts, delivery.last_status_code, delivery.delivered_at) == (1, 500, None)
    assert round((delivery.next_attempt_at - delivery.updated_at).total_seconds()) == 30
    assert time_passes() == 1
    delivery.refresh_from_db()
    assert (delivery.attempts, delivery.last_status_code) == (2, 503)
    assert round((delivery.next_attempt_at - delivery.updated_at).total_seconds()) == 60
    time_passes()
    delivery.refresh_from_db()
    assert (delivery.attempts, delivery.last_status_code, delivery.delivered_at is not None) == (3, 200, True)
    assert len(received) == 3

    answers += [500] * 20
    order(owner, django_capture_on_commit_callbacks)
    gave_up = WebhookDelivery.objects.exclude(pk=delivery.pk).get()
    waits = []
    while gave_up.gave_up_at is None:
        waits.append(round((gave_up.next_attempt_at - gave_up.updated_at).total_seconds()))
        time_passes()
        gave_up.refresh_from_db()
    assert gave_up.attempts == webhooks.WEBHOOK_MAX_ATTEMPTS == 15
    assert gave_up.delivered_at is None and gave_up.next_attempt_at is None
    assert waits == webhooks.RETRY_SCHEDULE
    assert time_passes() == 0  # nothing left to send


def test_the_retries_span_a_day():
    schedule = webhooks.RETRY_SCHEDULE
    assert schedule[:4] == [30, 60, 120, 240] and max(schedule) == 4 * 3600
    assert len(schedule) == webhooks.WEBHOOK_MAX_ATTEMPTS - 1
    assert dt.timedelta(hours=24) <= dt.timedelta(seconds=sum(schedule)) < dt.timedelta(hours=25)


def test_a_lost_enqueue_is_sent_by_the_sweeper(owner, city, receiver, django_capture_on_commit_callbacks, monkeypatch):
    url, received, _ = receiver
    owner.post(HOOKS, {"url": url, "events": ["report.succeeded"]}, format="json")

    def broker_down(*args, **kwargs):
        raise ConnectionError("the broker is down")

    monkeypatch.setattr(tasks.deliver_webhook, "apply_async", broker_down)
    order(owner, django_capture_on_commit_callbacks)
    delivery = WebhookDelivery.objects.get()
    assert (delivery.attempts, delivery.delivered_at, received) == (0, None, [])
    assert tasks.sweep_webhook_deliveries() == 0  # due only just now: its task may still be on its way
    monkeypatch.undo()

    assert time_passes() == 1

    delivery.refresh_from_db()
    assert (delivery.attempts, delivery.last_status_code, len(received)) == (1, 200, 1)


def test_a_delivery_runs_once_even_if_queued_twice(owner, city, receiver, django_capture_on_commit_callbacks):
    url, received, answers = receiver
    owner.post(HOOKS, {"url": url, "events": ["report.succeeded"]}, format="json")
    answers.append(500)
    order(owner, django_capture_on_commit_callbacks)
    delivery = WebhookDelivery.objects.get()

    services.webhook_deliver(delivery_id=str(delivery.pk))  # a second task, before the next try is due

    delivery.refresh_from_db()
    assert (delivery.attempts, len(received)) == (1, 1)


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


def test_an_organisation_has_at_most_the_endpoint_cap(owner, tenant, client_for, settings):
    settings.WEBHOOK_MAX_ENDPOINTS = 2
    body = {"url": "https://buyer.example/hook", "events": ["report.failed"]}
    first, _ = (owner.post(HOOKS, body, format="json").json() for _ in range(2))

    over = owner.post(HOOKS, body, format="json")

    error = assert_error(over, 409, "webhook_endpoints_limit")
    assert "at most 2" in error["message"]
    assert WebhookEndpoint.objects.filter(tenant=tenant).count() == 2
    assert client_for(granted_tenant(), Role.OWNER).post(HOOKS, body, format="json").status_code == 201  # per tenant
    owner.delete(f"{HOOKS}{first['id']}/")
    assert owner.post(HOOKS, body, format="json").status_code == 201


def test_a_test_event_is_sent_signed_and_logged(owner, tenant, receiver, django_capture_on_commit_callbacks):
    url, received, _ = receiver
    hook = owner.post(HOOKS, {"url": url, "events": ["report.failed"]}, format="json").json()

    with django_capture_on_commit_callbacks(execute=True):
        response = owner.post(f"{HOOKS}{hook['id']}/test/")

    assert response.status_code == 202, response.content
    queued = response.json()
    assert (queued["event"], queued["attempts"]) == ("webhook.test", 0)
    [delivery] = received
    payload = json.loads(delivery["body"])
    assert (payload["id"], payload["type"]) == (queued["id"], "webhook.test")
    assert payload["data"]["endpoint"] == {"id": hook["id"], "url": url}
    assert delivery["headers"]["webhook-id"] == queued["id"]
    assert verify(hook["secret"], delivery["headers"], delivery["body"])
    [logged] = owner.get(f"{HOOKS}{hook['id']}/deliveries/").json()["results"]
    assert (logged["id"], logged["last_status_code"], bool(logged["delivered_at"])) == (queued["id"], 200, True)
    assert AuditEvent.objects.filter(tenant=tenant, action="webhook.tested").exists()


def test_a_failed_test_event_is_not_retried(owner, receiver, django_capture_on_commit_callbacks):
    url, received, answers = receiver
    hook = owner.post(HOOKS, {"url": url, "events": ["report.failed"]}, format="json").json()
    answers.append(503)

    with django_capture_on_commit_callbacks(execute=True):
        owner.post(f"{HOOKS}{hook['id']}/test/")

    [logged] = owner.get(f"{HOOKS}{hook['id']}/deliveries/").json()["results"]
    assert (logged["last_status_code"], logged["attempts"], bool(logged["gave_up_at"])) == (503, 1, True)
    assert time_passes() == 0 and len(received) == 1


def test_only_owners_send_test_events_and_only_to_their_endpoints(owner, tenant, client_for):
    hook = owner.post(HOOKS, {"url": "https://buyer.example/hook", "events": ["report.failed"]}, format="json").json()

    assert client_for(tenant, Role.ANALYST).post(f"{HOOKS}{hook['id']}/test/").status_code == 403
    assert client_for(granted_tenant(), Role.OWNER).post(f"{HOOKS}{hook['id']}/test/").status_code == 404
    assert not WebhookDelivery.objects.exists()


def _pending_delivery(endpoint: WebhookEndpoint) -> WebhookDelivery:
    return WebhookDelivery.objects.create(
        endpoint=endpoint,
        event="report.succeeded",
        payload={"type": "report.succeeded"},
        next_attempt_at=timezone.now(),
    )


@pytest.fixture
def threads_close_their_connections():
    """Deliveries sent from a thread of the test use the thread's own database connection."""
    started = []

    def start(target, **kwargs):
        def run():
            try:
                target(**kwargs)
            finally:
                connection.close()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        started.append(thread)
        return thread

    yield start
    for thread in started:
        thread.join(30)


def test_deliveries_over_the_in_flight_cap_wait_their_turn(
    transactional_db, local_receivers, settings, threads_close_their_connections
):
    settings.WEBHOOK_MAX_IN_FLIGHT = 1
    slow = Receiver(hold=True)
    tenant = granted_tenant()
    owner = services.Principal(tenant=tenant, role=Role.OWNER, api_key=None)
    endpoint = services.webhook_endpoint_create(principal=owner, url=slow.url, events=["report.succeeded"])
    first, second = _pending_delivery(endpoint), _pending_delivery(endpoint)
    try:
        sender = threads_close_their_connections(services.webhook_deliver, delivery_id=str(first.pk))
        assert slow.arrived.wait(10), "the first delivery was not sent"

        services.webhook_deliver(delivery_id=str(second.pk))  # the tenant's one slot is taken

        second.refresh_from_db()
        assert (second.attempts, second.delivered_at, second.gave_up_at) == (0, None, None)
        assert len(slow.received) == 1
        WebhookDelivery.objects.filter(pk=second.pk).update(next_attempt_at=timezone.now() - dt.timedelta(minutes=5))
        assert services.webhook_deliveries_requeue() == 0  # nor does the sweeper queue it while the slot is taken

        slow.release()
        sender.join(30)
    finally:
        slow.close()

    # The first one, finishing, queued the one that waited.
    assert list(WebhookDelivery.objects.order_by("created_at").values_list("attempts", "last_status_code")) == [
        (1, 200),
        (1, 200),
    ]
    assert WebhookDelivery.objects.filter(delivered_at__isnull=False, sending_until=None).count() == 2


def test_the_cap_is_per_tenant(tenant, local_receivers, settings, receiver):
    settings.WEBHOOK_MAX_IN_FLIGHT = 1
    url, received, _ = receiver
    busy = granted_tenant()
    busy_endpoint = services.webhook_endpoint_create(
        principal=services.Principal(tenant=busy, role=Role.OWNER, api_key=None), url=url, events=["report.succeeded"]
    )
    WebhookDelivery.objects.filter(pk=_pending_delivery(busy_endpoint).pk).update(
        sending_until=timezone.now() + dt.timedelta(minutes=1)  # a worker is sending it
    )
    endpoint = services.webhook_endpoint_create(
        principal=services.Principal(tenant=tenant, role=Role.OWNER, api_key=None), url=url, events=["report.succeeded"]
    )
    waiting, ours = _pending_delivery(busy_endpoint), _pending_delivery(endpoint)

    services.webhook_deliver(delivery_id=str(waiting.pk))
    services.webhook_deliver(delivery_id=str(ours.pk))

    assert WebhookDelivery.objects.get(pk=waiting.pk).attempts == 0
    assert WebhookDelivery.objects.get(pk=ours.pk).delivered_at is not None


def test_a_worker_killed_mid_delivery_frees_its_slot_and_the_delivery_is_sent_again(tenant, receiver):
    url, received, _ = receiver
    endpoint = services.webhook_endpoint_create(
        principal=services.Principal(tenant=tenant, role=Role.OWNER, api_key=None), url=url, events=["report.succeeded"]
    )
    delivery = _pending_delivery(endpoint)
    # A worker claimed it (one attempt) and died: its slot runs until the deadline and margin.
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        attempts=1, sending_until=timezone.now() + dt.timedelta(seconds=40)
    )
    assert services.webhook_deliveries_requeue() == 0

    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        sending_until=timezone.now() - dt.timedelta(seconds=1),
        next_attempt_at=timezone.now() - dt.timedelta(minutes=1),
    )
    assert services.webhook_deliveries_requeue() == 1

    delivery.refresh_from_db()
    assert (delivery.attempts, delivery.last_status_code, delivery.sending_until) == (2, 200, None)


def test_deliveries_and_stripe_syncs_have_their_own_queue(settings):
    outbound = f"{settings.CELERY_TASK_DEFAULT_QUEUE}-outbound"
    assert settings.OUTBOUND_QUEUE == outbound
    router = celery_app.amqp.router
    for name in (
        "marketplace.tasks.deliver_webhook",
        "marketplace.tasks.sweep_webhook_deliveries",
        "billing.tasks.sync_usage",
        "billing.tasks.sync_due_usage",
        "billing.tasks.close_last_month",
    ):
        assert router.route({}, name)["queue"].name == outbound, name
    assert router.route({}, "insights.tasks.compute_report")["queue"].name == settings.CELERY_TASK_DEFAULT_QUEUE
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert "marketplace.tasks.sweep_webhook_deliveries" in scheduled


def test_the_sweeper_queues_each_tenant_up_to_its_slots_so_a_backlog_starves_no_one(tenant, settings, monkeypatch):
    settings.WEBHOOK_MAX_IN_FLIGHT = 2
    monkeypatch.setattr(webhooks, "SWEEP_BATCH", 3)
    queued = []
    monkeypatch.setattr(webhooks, "_webhook_enqueue", lambda delivery_id, countdown=0: queued.append(delivery_id))
    busy = WebhookEndpoint.objects.create(
        tenant=granted_tenant(), url="https://a.example/", events=[], secret="whsec_c2VjcmV0"
    )
    quiet = WebhookEndpoint.objects.create(tenant=tenant, url="https://b.example/", events=[], secret="whsec_c2VjcmV0")
    backlog = [_pending_delivery(busy) for _ in range(5)]
    lost = _pending_delivery(quiet)
    for age, delivery in enumerate(reversed(backlog), start=2):  # backlog[0] is due longest
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            next_attempt_at=timezone.now() - dt.timedelta(minutes=age)
        )
    WebhookDelivery.objects.filter(pk=lost.pk).update(next_attempt_at=timezone.now() - dt.timedelta(minutes=1))

    assert services.webhook_deliveries_requeue() == 3

    assert set(queued) == {backlog[0].pk, backlog[1].pk, lost.pk}
