"""The API load benchmark (bench/api): N concurrent buyers each order a shopping-centre footfall
report, poll it until it is final, and order the next; per N, the reports finished per second,
the time from order to `succeeded` (p50, p95, p99) and the POST latency.

It runs a private copy of the service as bin/run does (gunicorn with 2 workers, a Celery worker
with 2 processes on both queues, beat), set up by the fault runner's machinery (bench/faults.py)
with no fault and no delay: its own database (footfall_api), queue and Redis."""

import argparse
import statistics
import threading
import time

import requests

from bench import faults

DATABASE = "footfall_api"
BUYER_COUNTS = (1, 5, 20)
POLL_SECONDS = 0.05
REPORT_TIMEOUT_SECONDS = 120


def buyer(url: str, key: str, until: float, results: list[tuple]) -> None:
    """Order, poll until final, order again, until `until`; appends (status, POST s, order-to-final s)."""
    headers = {"Authorization": f"Api-Key {key}"}
    while time.monotonic() < until:
        ordered = time.monotonic()
        response = requests.post(f"{url}/api/v1/reports/", json=faults.order_body(), headers=headers, timeout=60)
        posted = time.monotonic() - ordered
        if response.status_code != 201:
            results.append((str(response.status_code), posted, None))
            time.sleep(float(response.headers.get("Retry-After", 1)))
            continue
        report = f"{url}/api/v1/reports/{response.json()['id']}/"
        status = "queued"
        while status in ("queued", "running") and time.monotonic() - ordered < REPORT_TIMEOUT_SECONDS:
            time.sleep(POLL_SECONDS)
            status = requests.get(report, headers=headers, timeout=60).json()["status"]
        results.append((status, posted, time.monotonic() - ordered))


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def run(service: faults.Service, keys: list[str], buyers: int, seconds: float) -> dict:
    results: list[tuple] = []
    until = time.monotonic() + seconds
    threads = [
        threading.Thread(target=buyer, args=(service.web_url, keys[index], until, results), daemon=True)
        for index in range(buyers)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    succeeded = [final for status, _, final in results if status == "succeeded"]
    posts = [posted for _, posted, _ in results]
    return {
        "buyers": buyers,
        "succeeded": len(succeeded),
        "other": sorted({status for status, _, _ in results if status != "succeeded"}),
        "per_second": len(succeeded) / elapsed,
        "final_p50": statistics.median(succeeded) if succeeded else None,
        "final_p95": percentile(succeeded, 0.95) if succeeded else None,
        "final_p99": percentile(succeeded, 0.99) if succeeded else None,
        "post_p95": percentile(posts, 0.95) if posts else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30, help="how long each buyer count runs (default 30)")
    parser.add_argument("--buyers", type=int, action="append", help="buyer counts (default 1, 5, 20)")
    args = parser.parse_args()
    counts = args.buyers or list(BUYER_COUNTS)
    names = [f"Buyer {index}" for index in range(max(counts))]  # a tenant per buyer
    with faults.running_service(DATABASE, names, worker_db_delay=0.0) as (service, tenants):
        keys = [key for _, key in tenants]
        rows = [run(service, keys, buyers, args.seconds) for buyers in counts]
    print(
        "\n| buyers | reports succeeded | reports/s | order to succeeded p50 / p95 / p99 (s) | POST p95 (s) | other |"
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
            f" | {', '.join(row['other']) or '-'} |"
        )


if __name__ == "__main__":
    main()
