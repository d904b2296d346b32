"""The API load benchmark (bench/api): N concurrent buyers each order a shopping-centre footfall
report, ask for it (?wait=) until it is final, and order the next; per N, the reports finished
per second, the time from order to `succeeded` (p50, p95, p99) and the POST latency; then, per
N, where a report's time went, stage by stage (the service's footfall_report_stage_seconds and
footfall_task_duration_seconds histograms, scraped from /metrics before and after).

It runs a private copy of the service as bin/run does (gunicorn with 2 gthread processes, a
Celery worker of 4 processes for reports and one of 8 threads for the outbound queue, beat), set
up by the fault runner's machinery (bench/faults.py) with no fault and no delay, and no proxies:
its own database (footfall_api), queue and Redis."""

import argparse
import collections
import itertools
import os
import random
import statistics
import threading
import time
import uuid

import requests
from prometheus_client.parser import text_string_to_metric_families

from bench import faults

DATABASE = "footfall_api"
# The service runs as in production (docker/compose.yaml: DEBUG off, which records every query
# in DEBUG), and its buyers' tenants may call as often as they like: the benchmark measures what
# the service serves, not the per-minute limit (API_REQUESTS_PER_MINUTE, 600) that a single busy
# buyer's orders and asks would reach.
SERVICE_SETTINGS = {"DEBUG": "false", "API_REQUESTS_PER_MINUTE": "1000000"}
BUYER_COUNTS = (1, 5, 20)
# Buyers ask for an ordered report with ?wait= (held until it is final, README); an answer that
# comes back unfinished (the wait ended, or no wait slot was free) is asked again after a pause.
WAIT_SECONDS = 20
PAUSE_SECONDS = 0.25
REPORT_TIMEOUT_SECONDS = 120
# The stages of marketplace/observability/metrics.py, in order, and the tasks of the worker.
STAGES = (
    "order_checks",
    "outbox_publish",
    "queue_wait",
    "claim",
    "engine",
    "result_storage",
    "ledger",
    "commit",
)
TASKS = {
    "insights.tasks.compute_report": "compute_report task (claim to commit)",
    "billing.tasks.sync_usage": "Stripe sync task",
    "marketplace.tasks.deliver_webhook": "webhook delivery task",
    "marketplace.tasks.publish_pending_reports": "outbox relay task",
}
# The test city's local days (Europe/Berlin), 27 March to 1 April 2026: orders take periods of
# whole days among them in turn, so no buyer orders the same report twice in a row.
CITY_MIDNIGHTS = (
    "2026-03-27T00:00:00+01:00",
    "2026-03-28T00:00:00+01:00",
    "2026-03-29T00:00:00+01:00",
    "2026-03-30T00:00:00+02:00",
    "2026-03-31T00:00:00+02:00",
    "2026-04-01T00:00:00+02:00",
)
PERIODS = list(itertools.combinations(CITY_MIDNIGHTS, 2))


def order_bodies() -> list[dict]:
    """The shopping-centre block's footfall by day, over each period of whole days."""
    body = faults.order_body()
    return [body | {"start": start, "end": end} for start, end in PERIODS]


def buyer(url: str, key: str, until: float, results: list[tuple], first: int, *, wait: float, pause: float) -> None:
    """Order, ask until final, order again, until `until`, over one keep-alive connection as an
    API client would: each order with an Idempotency-Key, sent again if the connection fails,
    and after a 503 or 429 again after Retry-After and a random part of it (so that buyers
    turned away together do not all come back together); appends (status, POST s,
    order-to-final s)."""
    session = requests.Session()
    session.headers["Authorization"] = f"Api-Key {key}"
    bodies = order_bodies()
    time.sleep(random.uniform(0, 1))  # buyers do not all start in the same instant
    for number in itertools.count(first):
        if time.monotonic() >= until:
            break
        ordered = time.monotonic()
        body, idempotency_key = bodies[number % len(bodies)], str(uuid.uuid4())
        for attempt in range(3):
            try:
                response = session.post(
                    f"{url}/api/v1/reports/", json=body, headers={"Idempotency-Key": idempotency_key}, timeout=60
                )
                break
            except requests.ConnectionError:
                if attempt == 2:
                    raise
        posted = time.monotonic() - ordered
        if response.status_code not in (200, 201):
            results.append((str(response.status_code), posted, None))
            time.sleep(float(response.headers.get("Retry-After", 1)) * random.uniform(1, 1.5))
            continue
        report = f"{url}/api/v1/reports/{response.json()['id']}/"
        status = "queued"
        asks = 0
        while status in ("queued", "running") and time.monotonic() - ordered < REPORT_TIMEOUT_SECONDS:
            if asks:
                time.sleep(pause)
            asked = session.get(report, params={"wait": wait} if wait else None, timeout=60)
            asks += 1
            if asked.status_code != 200:  # turned away (503, 429): asked again after Retry-After
                results.append((f"GET {asked.status_code}", 0.0, None))
                time.sleep(float(asked.headers.get("Retry-After", 1)) * random.uniform(1, 1.5))
                continue
            status = asked.json()["status"]
        results.append((status, posted, time.monotonic() - ordered))


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def histograms(service: faults.Service) -> dict[tuple[str, str], dict[float, float]]:
    """The service's stage and task histograms: per (metric, stage or task) the cumulative
    count of each bucket's upper bound, and the sum under bound -1."""
    response = requests.get(
        f"{service.web_url}/metrics", headers={"Authorization": f"Bearer {faults.METRICS_TOKEN}"}, timeout=30
    )
    response.raise_for_status()
    found: dict[tuple[str, str], dict[float, float]] = collections.defaultdict(dict)
    for family in text_string_to_metric_families(response.text):
        if family.name not in ("footfall_report_stage_seconds", "footfall_task_duration_seconds"):
            continue
        for sample in family.samples:
            name = sample.labels.get("stage") or sample.labels.get("task")
            if sample.name.endswith("_bucket"):
                found[(family.name, name)][float(sample.labels["le"])] = sample.value
            elif sample.name.endswith("_sum"):
                found[(family.name, name)][-1.0] = sample.value
    return found


def quantile(buckets: dict[float, float], share: float) -> float:
    """A quantile of a histogram, interpolated within its bucket as Prometheus' histogram_quantile does."""
    bounds = sorted(bound for bound in buckets if bound >= 0)
    total = buckets[bounds[-1]]
    rank, lower, below = share * total, 0.0, 0.0
    for bound in bounds:
        if buckets[bound] >= rank:
            if bound == float("inf"):
                return lower
            inside = buckets[bound] - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, buckets[bound]
    return lower


def stage_rows(before: dict, after: dict) -> list[tuple[str, int, float, float, float]]:
    """(stage, count, p50, p95, mean) of what was observed between the two scrapes."""
    rows = []
    wanted = [("footfall_report_stage_seconds", stage, stage) for stage in STAGES]
    wanted += [("footfall_task_duration_seconds", task, label) for task, label in TASKS.items()]
    for metric, name, label in wanted:
        now, then = after.get((metric, name), {}), before.get((metric, name), {})
        buckets = {bound: value - then.get(bound, 0.0) for bound, value in now.items()}
        count = int(buckets.get(float("inf"), 0))
        if count:
            rows.append((label, count, quantile(buckets, 0.5), quantile(buckets, 0.95), buckets[-1.0] / count))
    return rows


def run(service: faults.Service, keys: list[str], buyers: int, seconds: float, *, wait: float, pause: float) -> dict:
    results: list[tuple] = []
    until = time.monotonic() + seconds
    before = histograms(service)
    threads = [
        threading.Thread(
            target=buyer,
            args=(service.web_url, keys[index], until, results, index),
            kwargs={"wait": wait, "pause": pause},
            daemon=True,
        )
        for index in range(buyers)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    time.sleep(1)  # the last reports' commits are observed
    stages = stage_rows(before, histograms(service))
    succeeded = [final for status, _, final in results if status == "succeeded"]
    posts = [posted for status, posted, _ in results if not status.startswith("GET ")]
    return {
        "buyers": buyers,
        "succeeded": len(succeeded),
        "other": collections.Counter(status for status, _, _ in results if status != "succeeded"),
        "per_second": len(succeeded) / elapsed,
        "final_p50": statistics.median(succeeded) if succeeded else None,
        "final_p95": percentile(succeeded, 0.95) if succeeded else None,
        "final_p99": percentile(succeeded, 0.99) if succeeded else None,
        "post_p95": percentile(posts, 0.95) if posts else None,
        "stages": stages,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30, help="how long each buyer count runs (default 30)")
    parser.add_argument("--buyers", type=int, action="append", help="buyer counts (default 1, 5, 20)")
    parser.add_argument(
        "--wait", type=float, default=WAIT_SECONDS, help="each ask's ?wait= in seconds; 0: answered at once"
    )
    parser.add_argument(
        "--worker-concurrency", type=int, default=4, help="the worker's processes (default 4, as bin/run)"
    )
    parser.add_argument(
        "--pause", type=float, default=PAUSE_SECONDS, help="seconds between asks for an unfinished report"
    )
    args = parser.parse_args()
    counts = args.buyers or list(BUYER_COUNTS)
    names = [f"Buyer {index}" for index in range(max(counts))]  # a tenant per buyer
    os.environ.update(SERVICE_SETTINGS)  # the service's processes start from this environment
    with faults.running_service(
        DATABASE,
        names,
        worker_db_delay=0.0,
        proxied=False,
        worker_concurrency=args.worker_concurrency,
        outbound_pool=True,
    ) as (service, tenants):
        keys = [key for _, key in tenants]
        rows = [run(service, keys, buyers, args.seconds, wait=args.wait, pause=args.pause) for buyers in counts]
    print(
        "\n| buyers | reports succeeded | reports/s | order to succeeded p50 / p95 / p99 (s) | POST p95 (s)"
        " | other outcomes (an HTTP status: an order turned away, ordered again after Retry-After;"
        " GET and a status: an ask turned away, asked again; or a report's status) |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        finals = (
            "-"
            if row["final_p50"] is None
            else (f"{row['final_p50']:.2f} / {row['final_p95']:.2f} / {row['final_p99']:.2f}")
        )
        post = "-" if row["post_p95"] is None else f"{row['post_p95']:.2f}"
        print(
            f"| {row['buyers']} | {row['succeeded']} | {row['per_second']:.2f} | {finals} | {post}"
            f" | {', '.join(f'{status}×{count}' for status, count in sorted(row['other'].items())) or '-'} |"
        )

    print("\nWhere a report's time goes (histogram quantiles, interpolated within buckets; mean exact):")
    for row in rows:
        print(f"\n{row['buyers']} buyers\n")
        print("| stage | observed | p50 (ms) | p95 (ms) | mean (ms) |")
        print("|---|---|---|---|---|")
        for label, count, p50, p95, mean in row["stages"]:
            print(f"| {label} | {count} | {p50 * 1000:.1f} | {p95 * 1000:.1f} | {mean * 1000:.1f} |")


if __name__ == "__main__":
    main()
