"""What operators watch the service by: /metrics (protected, by route, never a 500), request
ids, and JSON log lines that say which request, tenant, report and task they belong to."""

import io
import json
import logging
import re
import socket
import time
import uuid

import pytest
from celery import shared_task
from django.db import connection
from prometheus_client import REGISTRY

from marketplace import services, tasks
from marketplace.celery import app as celery_app
from marketplace.models import Report, WebhookDelivery, WebhookEndpoint
from marketplace.observability import selectors
from marketplace.observability.celery_signals import add_log_context_headers
from marketplace.observability.context import log_scope
from marketplace.observability.logs import JsonFormatter, LogContextFilter, TextFormatter
from marketplace.observability.metrics import REPORT_STAGES
from tests.errors import assert_error
from tests.marketplace.test_api_reports import REPORTS, order_body

TOKEN = "metrics-" + "x" * 32
UNREACHABLE_BROKER = "amqp://guest:guest@127.0.0.1:1//"


@pytest.fixture
def metrics_token(settings):
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOWED_NETWORKS = []


@pytest.fixture
def scrape(db, client, metrics_token):
    def get() -> str:
        response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
        assert response.status_code == 200, response.content
        assert response["Content-Type"].startswith("text/plain; version=")
        return response.content.decode()

    return get


@pytest.fixture
def place(api, django_capture_on_commit_callbacks):
    """POST an order and run what it queued (the task, eagerly)."""

    def post(body, **headers):
        with django_capture_on_commit_callbacks(execute=True):
            return api.post(REPORTS, body, format="json", **headers)

    return post


@pytest.fixture
def json_lines():
    """The JSON log lines written while the test runs, parsed."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(LogContextFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    level, root.level = root.level, logging.INFO
    lines: list[dict] = []

    def read() -> list[dict]:
        lines[:] = [json.loads(line) for line in stream.getvalue().splitlines()]
        return lines

    yield read
    root.removeHandler(handler)
    root.level = level


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def metric_lines(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name + "{") or line.startswith(name + " ")]


# --- protection -----------------------------------------------------------------------------


def test_metrics_needs_the_bearer_token(db, client, metrics_token):
    assert_error(client.get("/metrics"), 401, "not_authenticated")
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer not-the-token")
    assert_error(wrong, 401, "not_authenticated")
    assert wrong["WWW-Authenticate"].startswith("Bearer")
    assert_error(client.get("/metrics", HTTP_AUTHORIZATION=f"Api-Key {TOKEN}"), 401, "not_authenticated")

    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200


def test_metrics_are_served_to_allowed_networks_without_a_token(db, client, settings):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    assert_error(client.get("/metrics"), 403, "permission_denied")  # the test client is 127.0.0.1
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200

    settings.METRICS_ALLOWED_NETWORKS = []  # neither: nobody
    assert_error(client.get("/metrics", REMOTE_ADDR="10.1.2.3"), 403, "permission_denied")


def test_an_api_key_does_not_open_metrics(tenant, client_for, metrics_token):
    assert client_for(tenant).get("/metrics").status_code == 401


# --- content --------------------------------------------------------------------------------


def test_metrics_describe_reports_queues_billing_and_webhooks(tenant, api, city, scrape, settings):
    with_report = api.post(REPORTS, order_body(), format="json")  # queued: its task waits for the commit
    assert with_report.status_code == 201
    endpoint = WebhookEndpoint.objects.create(
        tenant=tenant, url="https://hooks.example/footfall", secret="whsec_c2VjcmV0"
    )
    WebhookDelivery.objects.create(endpoint=endpoint, event="report.succeeded", payload={}, attempts=3)
    WebhookDelivery.objects.create(endpoint=endpoint, event="report.failed", payload={}, attempts=2)
    WebhookDelivery.objects.filter(event="report.succeeded").update(gave_up_at=Report.objects.get().created_at)

    text = scrape()

    assert 'footfall_reports{product="footfall",status="queued"} 1.0' in text
    assert float(metric_lines(text, "footfall_report_oldest_queued_age_seconds")[0].split()[-1]) >= 0
    assert 'footfall_webhook_deliveries{state="given_up"} 1.0' in text
    assert 'footfall_webhook_deliveries{state="pending"} 1.0' in text
    assert "footfall_webhook_failed_attempts 5.0" in text  # no attempt was taken
    assert "footfall_stripe_usage_pending 0.0" in text
    assert "footfall_stripe_sync_lag_seconds 0.0" in text
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    # One line per queue (reports, outbound); the counts are the broker's
    queue_lines = metric_lines(text, "footfall_queue_messages")
    assert sorted(line.split()[0] for line in queue_lines) == sorted(
        f'footfall_queue_messages{{queue="{name}"}}' for name in (queue, settings.OUTBOUND_QUEUE)
    )
    assert 'footfall_metrics_source_up{source="broker"} 1.0' in text
    assert 'footfall_metrics_source_up{source="database"} 1.0' in text
    # The queued report's message is not sent (its commit hooks did not run here): the outbox lags.
    assert float(metric_lines(text, "footfall_report_outbox_lag_seconds")[0].split()[-1]) > 0
    assert "# TYPE footfall_http_requests_total counter" in text


def test_stripe_sync_lag_is_the_age_of_the_oldest_unsent_line(tenant, api, city, place, scrape):
    assert place(order_body()).status_code == 201  # computed eagerly, billed: its line waits for Stripe
    assert Report.objects.get().status == Report.Status.SUCCEEDED

    text = scrape()

    assert "footfall_stripe_usage_pending 1.0" in text
    assert float(metric_lines(text, "footfall_stripe_sync_lag_seconds")[0].split()[-1]) > 0


def test_request_metrics_are_labelled_by_route_not_path(api, scrape):
    report_id = uuid.uuid4()
    route = "api/v1/reports/(?P<pk>[^/.]+)/$"
    before = sample("footfall_http_requests_total", method="GET", route=route, status="404")
    duration_before = sample("footfall_http_request_duration_seconds_count", method="GET", route=route)

    assert api.get(f"{REPORTS}{report_id}/").status_code == 404
    assert api.get("/api/v1/no-such-thing/").status_code == 404

    assert sample("footfall_http_requests_total", method="GET", route=route, status="404") == before + 1
    assert sample("footfall_http_request_duration_seconds_count", method="GET", route=route) == duration_before + 1
    text = scrape()
    assert f'footfall_http_requests_total{{method="GET",route="{route}",status="404"}}' in text
    assert 'route="unmatched"' in text
    assert str(report_id) not in text and "no-such-thing" not in text


def test_a_succeeded_report_is_observed_in_the_order_to_succeeded_histogram(api, city, place, scrape):
    before = sample("footfall_report_order_to_succeeded_seconds_count", product="footfall")

    assert place(order_body()).status_code == 201

    report = Report.objects.get()
    assert report.status == Report.Status.SUCCEEDED
    assert sample("footfall_report_order_to_succeeded_seconds_count", product="footfall") == before + 1
    assert 'footfall_report_order_to_succeeded_seconds_bucket{le="+Inf",product="footfall"}' in scrape()


def test_each_stage_of_a_report_is_observed_once_when_it_runs(api, city, place, scrape):
    before = {stage: sample("footfall_report_stage_seconds_count", stage=stage) for stage in REPORT_STAGES}
    task = "insights.tasks.compute_report"
    task_runs = sample("footfall_task_duration_seconds_count", task=task)

    assert place(order_body()).status_code == 201

    assert Report.objects.get().status == Report.Status.SUCCEEDED
    after = {stage: sample("footfall_report_stage_seconds_count", stage=stage) for stage in REPORT_STAGES}
    assert after == {stage: count + 1 for stage, count in before.items()}
    assert sample("footfall_report_stage_seconds_sum", stage="engine") > 0
    assert sample("footfall_task_duration_seconds_count", task=task) == task_runs + 1
    text = scrape()
    assert 'footfall_report_stage_seconds_bucket{le="+Inf",stage="queue_wait"}' in text
    assert f'footfall_task_duration_seconds_bucket{{le="+Inf",task="{task}"}}' in text


def test_a_waited_status_poll_counts_only_its_answering_time(api, city, scrape, settings):
    settings.REPORT_WAIT_POLL_SECONDS = 0.05
    report_id = api.post(REPORTS, order_body(), format="json").json()["id"]  # queued: nothing runs it
    route = "api/v1/reports/(?P<pk>[^/.]+)/$"
    slow = sample("footfall_http_request_duration_seconds_count", method="GET", route=route) - sample(
        "footfall_http_request_duration_seconds_bucket", method="GET", route=route, le="0.25"
    )

    assert api.get(f"{REPORTS}{report_id}/", {"wait": "0.3"}).json()["status"] == "queued"

    now_slow = sample("footfall_http_request_duration_seconds_count", method="GET", route=route) - sample(
        "footfall_http_request_duration_seconds_bucket", method="GET", route=route, le="0.25"
    )
    assert now_slow == slow


# --- failures never fail the scrape ---------------------------------------------------------


@pytest.fixture
def broker_down(monkeypatch):
    # Celery prefers CELERY_BROKER_URL from the environment (.env sets it) over its config.
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    monkeypatch.setattr(celery_app.conf, "broker_url", UNREACHABLE_BROKER)


def test_the_scrape_survives_an_unreachable_broker(scrape, broker_down):
    started = time.monotonic()
    text = scrape()

    assert time.monotonic() - started < 5
    assert 'footfall_metrics_source_up{source="broker"} 0.0' in text
    assert metric_lines(text, "footfall_queue_messages") == []
    assert 'footfall_metrics_source_up{source="database"} 1.0' in text
    assert "footfall_reports" in text


def test_the_scrape_survives_a_broker_that_accepts_connections_but_never_answers(scrape, monkeypatch, settings):
    with socket.socket() as silent:  # the kernel completes connections; nobody ever reads or answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
        monkeypatch.setattr(celery_app.conf, "broker_url", f"amqp://guest:guest@127.0.0.1:{silent.getsockname()[1]}//")
        settings.METRICS_BROKER_TIMEOUT_SECONDS = 0.5

        started = time.monotonic()
        text = scrape()

    assert time.monotonic() - started < 3
    assert 'footfall_metrics_source_up{source="broker"} 0.0' in text
    assert metric_lines(text, "footfall_queue_messages") == []


def test_a_failing_database_read_leaves_its_metrics_out_and_the_rest_in(scrape, monkeypatch):
    def too_slow():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(5)")

    monkeypatch.setattr(selectors, "reports_by_product_and_status", too_slow)
    monkeypatch.setattr("django.conf.settings.METRICS_STATEMENT_TIMEOUT_MS", 100)

    text = scrape()

    assert 'footfall_metrics_source_up{source="database"} 0.0' in text
    assert metric_lines(text, "footfall_reports") == []
    assert "footfall_webhook_failed_attempts 0.0" in text  # the next reads still ran
    with connection.cursor() as cursor:  # and the caller's statement timeout is back
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == "0"


# --- request ids and log lines --------------------------------------------------------------


def test_a_sane_x_request_id_is_kept_and_returned(db, client):
    response = client.get("/healthz", HTTP_X_REQUEST_ID="lb-7f3a.2026:01")

    assert response["X-Request-ID"] == "lb-7f3a.2026:01"


@pytest.mark.parametrize("incoming", [None, "", "two words", "x" * 129, "id\nforged: line", '"quoted"'])
def test_a_missing_or_odd_x_request_id_is_replaced_by_a_new_one(db, client, incoming):
    headers = {} if incoming is None else {"HTTP_X_REQUEST_ID": incoming}

    first = client.get("/healthz", **headers)["X-Request-ID"]
    second = client.get("/healthz", **headers)["X-Request-ID"]

    assert re.fullmatch(r"[0-9a-f]{32}", first) and first != second


def test_log_lines_are_json_with_request_tenant_and_report(tenant, api, city, place, json_lines):
    created = place(order_body(), HTTP_X_REQUEST_ID="order-1").json()
    response = api.get(f"{REPORTS}{created['id']}/", HTTP_X_REQUEST_ID="follow-1")

    assert response["X-Request-ID"] == "follow-1"
    [line] = [line for line in json_lines() if line.get("request_id") == "follow-1"]
    assert line["logger"] == "marketplace.requests"
    assert (line["level"], line["tenant"], line["report_id"]) == ("INFO", tenant.pk, created["id"])
    assert (line["method"], line["status"], line["route"]) == ("GET", 200, "api/v1/reports/(?P<pk>[^/.]+)/$")
    assert "timestamp" in line and "task_id" not in line
    [order_line] = [line for line in json_lines() if line.get("request_id") == "order-1"]
    assert (order_line["tenant"], order_line["status"]) == (tenant.pk, 201)


def test_a_tasks_log_lines_carry_its_task_and_report_within_the_requests(json_lines, monkeypatch):
    def report_run(*, report_id):
        logging.getLogger("marketplace.services.runs").info("computing")
        return services.RunOutcome.FINISHED

    monkeypatch.setattr(services, "report_run", report_run)
    report_id = str(uuid.uuid4())

    with log_scope(request_id="req-9", tenant=4):
        result = tasks.compute_report.apply(args=[report_id])
        logging.getLogger("test").info("after the task")

    [computing] = [line for line in json_lines() if line["message"] == "computing"]
    assert computing["task_id"] == result.id
    assert (computing["report_id"], computing["request_id"], computing["tenant"]) == (report_id, "req-9", 4)
    [after] = [line for line in json_lines() if line["message"] == "after the task"]
    assert (after["request_id"], "task_id" in after, "report_id" in after) == ("req-9", False, False)


@shared_task(name="tests.observability.log_something")
def log_something() -> None:
    logging.getLogger("test").info("in the task")


def test_the_log_context_travels_with_the_task_message(json_lines):
    headers: dict = {}
    with log_scope(request_id="req-5", tenant=3, report_id="r-1", task_id="parent"):
        add_log_context_headers(headers=headers)
    assert headers == {"log_request_id": "req-5", "log_tenant": 3, "log_report_id": "r-1"}

    log_something.apply(headers=headers)

    [line] = [line for line in json_lines() if line["message"] == "in the task"]
    assert (line["request_id"], line["tenant"], line["report_id"]) == ("req-5", 3, "r-1")
    assert line["task_id"] != "parent"


@shared_task(name="tests.observability.retry_once", bind=True, max_retries=1)
def retry_once(self) -> None:
    logging.getLogger("test").info("try %s", self.request.retries)
    if self.request.retries == 0:
        raise self.retry(countdown=0)


def test_a_retried_eager_task_leaves_no_scope_behind(json_lines):
    retry_once.apply()

    logging.getLogger("test").info("after")

    tries = [line for line in json_lines() if line["message"].startswith("try")]
    assert [line["message"] for line in tries] == ["try 0", "try 1"]
    assert all(line.get("task_id") for line in tries)
    [after] = [line for line in json_lines() if line["message"] == "after"]
    assert "task_id" not in after


def test_text_log_lines_carry_the_known_fields():
    record = logging.LogRecord("test", logging.WARNING, __file__, 1, "slow %s", ("answer",), None)
    with log_scope(request_id="req-1", report_id="r-2"):
        LogContextFilter().filter(record)

    assert TextFormatter().format(record).endswith("WARNING test slow answer [request_id=req-1 report_id=r-2]")


def test_outside_a_request_a_log_line_has_no_context_fields(json_lines):
    logging.getLogger("test").info("alone")

    [line] = [line for line in json_lines() if line["message"] == "alone"]
    assert not {"request_id", "tenant", "report_id", "task_id"} & set(line)
