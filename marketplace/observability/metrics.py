"""Prometheus metrics (docs/operations.md lists them, with the alerts to set).

Counters and histograms are observed where things happen: requests by the middleware, reports
by runs._report_release. With several gunicorn workers or Celery processes, set
PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode: each process writes its
values to files there, and /metrics adds them up). Everything that describes the state of the
service (reports by status, queue depth, sync and outbox lag, webhook failures) is read at
scrape time from the database and the broker instead, so every process and every restart
agrees on it."""

import hmac
import ipaddress
import logging
import os
import time
from collections.abc import Callable, Iterable

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from marketplace.exceptions import error_body
from marketplace.models import Report
from marketplace.observability import selectors

logger = logging.getLogger(__name__)

HTTP_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

HTTP_REQUESTS = Counter(
    "footfall_http_requests",
    "HTTP requests answered, by method, URL route pattern and status code.",
    ["method", "route", "status"],
)
HTTP_REQUEST_DURATION = Histogram(
    "footfall_http_request_duration_seconds",
    "Time to answer an HTTP request, by method and URL route pattern.",
    ["method", "route"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
# Fine buckets: most stages of a report take milliseconds to a fraction of a second.
STAGE_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.35,
    0.5,
    0.75,
    1,
    1.5,
    2,
    3,
    5,
    10,
    30,
    60,
    300,
)
# Where a report's time goes, in the order it goes there (docs/operations.md says what each covers).
REPORT_STAGES = (
    "order_checks",  # web: the POST's checks and writes, up to the commit
    "outbox_publish",  # web: sending the compute message after the commit
    "queue_wait",  # from the order (queued_at) to a worker claiming the report
    "claim",  # worker: the report's lock, its claim and what the engine needs read
    "engine",  # worker: computing the result
    "result_storage",  # worker: the result and its release record (and queueing the buyer's webhooks)
    "ledger",  # worker: the usage line and its Stripe outbox row
    "commit",  # worker: the commit, and after it queueing the Stripe sync and sending webhooks
)
REPORT_STAGE_DURATION = Histogram(
    "footfall_report_stage_seconds",
    "Time a report spent in each stage between its order and its result, by stage.",
    ["stage"],
    buckets=STAGE_BUCKETS,
)
TASK_DURATION = Histogram(
    "footfall_task_duration_seconds",
    "Time a Celery task took to run, by task name.",
    ["task"],
    buckets=STAGE_BUCKETS,
)
REPORT_ORDER_TO_SUCCEEDED = Histogram(
    "footfall_report_order_to_succeeded_seconds",
    "Time from a report's order to its result being stored (succeeded), by product.",
    ["product"],
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600),
)


def report_stage_observe(stage: str, seconds: float) -> None:
    REPORT_STAGE_DURATION.labels(stage=stage).observe(max(seconds, 0.0))


class StageClock:
    """Laps of a report's way: each lap observes the time since the one before as its stage."""

    def __init__(self) -> None:
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        report_stage_observe(stage, now - self._last)
        self._last = now


def task_observe(*, task_name: str, seconds: float) -> None:
    TASK_DURATION.labels(task=task_name).observe(seconds)


def request_observe(*, request: HttpRequest, response: HttpResponse, duration_seconds: float) -> None:
    method = request.method if request.method in HTTP_METHODS else "other"
    route = request_route(request)
    HTTP_REQUESTS.labels(method=method, route=route, status=str(response.status_code)).inc()
    HTTP_REQUEST_DURATION.labels(method=method, route=route).observe(duration_seconds)


def request_route(request: HttpRequest) -> str:
    """The URL pattern the request matched (`api/v1/reports/<uuid:pk>/result.csv`), never its
    path: ids in a label would make a time series per id."""
    match = getattr(request, "resolver_match", None)
    return match.route if match is not None else "unmatched"


def report_succeeded_observe(*, report: Report) -> None:
    """Called when a report's result is stored; observed once the transaction commits."""
    transaction.on_commit(lambda: _report_succeeded(report))


def _report_succeeded(report: Report) -> None:
    if report.finished_at is not None:
        waited = (report.finished_at - report.created_at).total_seconds()
        REPORT_ORDER_TO_SUCCEEDED.labels(product=report.product.code).observe(max(waited, 0.0))


class StateCollector(Collector):
    """The state of the service, read at scrape time (selectors); a source that fails or is too
    slow leaves its metrics out and reports footfall_metrics_source_up 0."""

    def collect(self) -> Iterable[Metric]:
        started = time.monotonic()
        up = GaugeMetricFamily(
            "footfall_metrics_source_up", "Whether /metrics could read the source this scrape.", labels=["source"]
        )
        database_ok = True
        for read in (_reports, _usage_sync, _webhooks, _outbox):
            try:
                with selectors.statement_timeout():
                    families = list(read())
            except Exception:
                database_ok = False
                logger.warning("metrics: could not read %s", read.__name__.strip("_"), exc_info=True)
                continue
            yield from families
        up.add_metric(["database"], 1.0 if database_ok else 0.0)
        try:
            yield from _queues()
            up.add_metric(["broker"], 1.0)
        except Exception as exc:
            up.add_metric(["broker"], 0.0)
            logger.warning("metrics: could not read the queues from the broker (%s)", type(exc).__name__)
        yield up
        yield GaugeMetricFamily(
            "footfall_metrics_scrape_duration_seconds",
            "How long reading the database and the broker took for this scrape.",
            value=time.monotonic() - started,
        )


def _reports() -> Iterable[Metric]:
    reports = GaugeMetricFamily("footfall_reports", "Reports by product and status.", labels=["product", "status"])
    for (product, status), count in sorted(selectors.reports_by_product_and_status().items()):
        reports.add_metric([product, status], count)
    yield reports
    yield GaugeMetricFamily(
        "footfall_report_oldest_queued_age_seconds",
        "How long the longest-waiting queued report has waited since it was queued (0 if none).",
        value=selectors.oldest_queued_report_age_seconds(),
    )


def _usage_sync() -> Iterable[Metric]:
    pending, oldest_age = selectors.usage_sync_lag()
    yield GaugeMetricFamily("footfall_stripe_usage_pending", "Usage lines not yet sent to Stripe.", value=pending)
    yield GaugeMetricFamily(
        "footfall_stripe_sync_lag_seconds",
        "Age of the oldest usage line not yet sent to Stripe (0 if none).",
        value=oldest_age,
    )


def _webhooks() -> Iterable[Metric]:
    totals = selectors.webhook_delivery_totals()
    deliveries = GaugeMetricFamily(
        "footfall_webhook_deliveries", "Webhook deliveries by state (delivered, given_up, pending).", labels=["state"]
    )
    for state in ("delivered", "given_up", "pending"):
        deliveries.add_metric([state], totals[state])
    yield deliveries
    yield GaugeMetricFamily(
        "footfall_webhook_failed_attempts",
        "Webhook delivery attempts that failed (an error or a non-2xx answer), over all deliveries kept.",
        value=totals["failed_attempts"],
    )


def _outbox() -> Iterable[Metric]:
    yield GaugeMetricFamily(
        "footfall_report_outbox_lag_seconds",
        "Age of the oldest queued report whose message is not sent to the broker yet (0 if none).",
        value=selectors.report_outbox_lag_seconds(),
    )


def _queues() -> Iterable[Metric]:
    depths = selectors.queue_depths()  # raises before anything is yielded
    messages = GaugeMetricFamily("footfall_queue_messages", "Messages waiting in a Celery queue.", labels=["queue"])
    consumers = GaugeMetricFamily("footfall_queue_consumers", "Workers consuming a Celery queue.", labels=["queue"])
    for depth in depths:
        messages.add_metric([depth.queue], depth.messages)
        consumers.add_metric([depth.queue], depth.consumers)
    yield messages
    yield consumers


def _observed_registry() -> CollectorRegistry:
    """This process's counters and histograms, or, in multiprocess mode, every process's."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return registry


def _state_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(StateCollector())
    return registry


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """GET /metrics, for Prometheus: with `Authorization: Bearer <METRICS_TOKEN>`, or from
    METRICS_ALLOWED_NETWORKS."""
    if not metrics_access_allowed(request):
        if settings.METRICS_TOKEN:
            detail, status = "send 'Authorization: Bearer <METRICS_TOKEN>'", 401
        else:
            detail, status = "metrics are served only to METRICS_ALLOWED_NETWORKS, or with METRICS_TOKEN set", 403
        code = "not_authenticated" if status == 401 else "permission_denied"
        body = error_body(error_type="client_error", errors=[{"code": code, "detail": detail, "attr": None}])
        response = JsonResponse(body, status=status)
        if status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    output = _exposition(_observed_registry) + _exposition(_state_registry)
    return HttpResponse(output, content_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})


def _exposition(registry: Callable[[], CollectorRegistry]) -> bytes:
    try:
        return generate_latest(registry())
    except Exception:  # say, a damaged multiprocess file: the rest of the scrape still counts
        logger.exception("metrics: could not collect")
        return b""


def metrics_access_allowed(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if token and scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), token.encode()):
        return True
    try:
        peer = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(peer in ipaddress.ip_network(network) for network in settings.METRICS_ALLOWED_NETWORKS)
