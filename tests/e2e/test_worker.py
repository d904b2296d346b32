"""Whole flows through the REST API, the real broker and real Celery workers."""

from collections import defaultdict
from zoneinfo import ZoneInfo

import psycopg
import pytest
from django.db import connection

from billing.models import UsageLine
from marketplace.models import Release
from marketplace.selectors import report_result_document
from tests.e2e.conftest import wait_for_status
from tests.factories import five_day_order_body

pytestmark = pytest.mark.e2e
BERLIN = ZoneInfo("Europe/Berlin")
ORDER = five_day_order_body()


def expected_days(city) -> list[int]:
    days = defaultdict(int)
    for (_, hour), visits in city.items():
        days[hour.astimezone(BERLIN).date()] += visits
    return [days[day] for day in sorted(days)]


def test_an_order_is_computed_by_a_worker_and_downloadable(api, city, workers):
    workers.start()

    created = api.post("/api/v1/reports/", ORDER, format="json")

    assert created.status_code == 201
    wait_for_status(created.json()["id"], "succeeded", "failed")
    report = api.get(f"/api/v1/reports/{created.json()['id']}/").json()
    assert report["status"] == "succeeded"
    assert [row["person_hours"] for row in report["result"]["series"]] == expected_days(city)
    assert report["result"]["privacy"]["round_to"] == 1  # the worker releases as the tests do
    csv_download = api.get(f"/api/v1/reports/{report['id']}/result.csv")
    csv_lines = b"".join(csv_download.streaming_content).decode().splitlines()
    assert len(csv_lines) == 1 + len(expected_days(city))


def test_a_worker_killed_mid_report_leaves_nothing_stuck(api, city, workers):
    # Hold the published tables, all a report reads, so the first worker blocks inside the computation.
    settings = connection.settings_dict
    with psycopg.connect(
        dbname=settings["NAME"], host=settings["HOST"], port=settings["PORT"] or 5432, user=settings["USER"]
    ) as blocker:
        blocker.execute(
            "LOCK TABLE insights_presence_released, insights_presence_released_day IN ACCESS EXCLUSIVE MODE"
        )
        first = workers.start()
        report_id = api.post("/api/v1/reports/", ORDER, format="json").json()["id"]
        assert wait_for_status(report_id, "running").attempts == 1

        workers.kill(first)  # SIGKILL to the whole worker: no cleanup, no ack
        blocker.rollback()

    workers.start()
    report = wait_for_status(report_id, "succeeded", "failed")

    assert (report.status, report.attempts) == ("succeeded", 2)
    assert [row["person_hours"] for row in report_result_document(report=report)["series"]] == expected_days(city)
    # Computed twice, billed and released once.
    assert UsageLine.objects.filter(report_id=report_id).count() == 1
    assert Release.objects.filter(report_id=report_id).count() == 1
