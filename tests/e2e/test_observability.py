"""A real worker's log lines and metrics: JSON lines that carry the request that ordered the
report, and the order-to-succeeded histogram written in prometheus_client's multiprocess mode."""

import json
import time

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from tests.e2e.conftest import WAIT_SECONDS, wait_for_status
from tests.e2e.test_worker import ORDER

pytestmark = pytest.mark.e2e


def json_lines(path) -> list[dict]:
    lines = []
    for line in path.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue  # a line some library printed by itself
    return lines


def test_a_workers_log_lines_follow_the_order_and_its_histogram_is_shared(api, tenant, city, workers, tmp_path):
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    workers.env.update({"LOG_FORMAT": "json", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    workers.start()

    created = api.post("/api/v1/reports/", ORDER, format="json", HTTP_X_REQUEST_ID="e2e-order-1")
    assert created.status_code == 201
    report_id = created.json()["id"]
    assert wait_for_status(report_id, "succeeded", "failed").status == "succeeded"

    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:  # the line after the task may come a moment after the status
        task_lines = [line for line in json_lines(workers.log_dir / "worker-0.log") if line.get("task_id")]
        if any(line.get("report_id") == report_id for line in task_lines):
            break
        time.sleep(0.2)
    ours = [line for line in task_lines if line.get("report_id") == report_id]
    assert ours, task_lines
    assert {(line["request_id"], line["tenant"]) for line in ours} == {("e2e-order-1", tenant.pk)}
    assert all(line["level"] and line["logger"] and line["timestamp"] for line in ours)

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(metrics_dir))
    assert registry.get_sample_value("footfall_report_order_to_succeeded_seconds_count", {"product": "footfall"}) == 1
