"""Webhooks through the real broker: sent by the outbound worker pool (with Stripe's syncs),
never by the reports' one, so an endpoint that hangs holds no report back."""

import time

import pytest
from django.conf import settings as django_settings

from marketplace.models import Role, WebhookDelivery
from tests.e2e.conftest import WAIT_SECONDS, wait_for_status
from tests.e2e.test_worker import ORDER
from tests.webhook_receivers import Receiver

pytestmark = pytest.mark.e2e


@pytest.fixture
def hanging_receiver(settings):
    settings.WEBHOOK_ALLOW_HTTP = True
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    receiver = Receiver(hold=True)
    yield receiver
    receiver.close()


def test_a_hanging_endpoint_holds_no_report_back(tenant, client_for, city, workers, hanging_receiver):
    workers.env.update(
        {"WEBHOOK_ALLOW_HTTP": "true", "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1", "WEBHOOK_DEADLINE_SECONDS": "60"}
    )
    workers.start(queues=(django_settings.CELERY_TASK_DEFAULT_QUEUE,))  # reports, one at a time
    # Webhooks and Stripe, in threads as bin/run and docker/ run them; the tenant may have one in flight.
    workers.env["WEBHOOK_MAX_IN_FLIGHT"] = "1"
    workers.start(queues=(django_settings.OUTBOUND_QUEUE,), pool="threads", concurrency=4)
    owner = client_for(tenant, Role.OWNER)
    hook = owner.post("/api/v1/webhooks/", {"url": hanging_receiver.url, "events": ["report.succeeded"]}, format="json")
    assert hook.status_code == 201, hook.content

    first = owner.post("/api/v1/reports/", ORDER, format="json").json()["id"]
    assert wait_for_status(first, "succeeded", "failed").status == "succeeded"
    assert hanging_receiver.arrived.wait(WAIT_SECONDS), "the outbound worker never sent the first delivery"

    second = owner.post("/api/v1/reports/", {**ORDER, "name": "again"}, format="json").json()["id"]

    assert wait_for_status(second, "succeeded", "failed").status == "succeeded"  # while the endpoint still hangs
    assert len(hanging_receiver.received) == 1
    hanging_receiver.release()
    deadline = time.monotonic() + WAIT_SECONDS
    while WebhookDelivery.objects.filter(delivered_at__isnull=False).count() < 2:
        assert time.monotonic() < deadline, "the deliveries were not both sent after the endpoint answered"
        time.sleep(0.2)
    assert len(hanging_receiver.received) == 2
