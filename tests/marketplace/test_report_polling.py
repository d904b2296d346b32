"""Asking for a report's status: cheap (the result is not read while it is being computed), and
with ?wait= held until the report is final instead of polled for."""

import threading
import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from marketplace import report_waits, selectors
from marketplace.models import Report
from marketplace.services import outbox, runs
from tests.errors import assert_error
from tests.factories import TenantFactory, order_body

REPORTS = "/api/v1/reports/"


@pytest.fixture
def queued(api, city) -> str:
    """A report ordered and not computed yet (its message is not sent: no on-commit here)."""
    response = api.post(REPORTS, order_body(), format="json")
    assert response.status_code == 201
    return response.json()["id"]


def test_a_status_poll_reads_neither_the_result_nor_the_quote_apart(api, queued):
    with CaptureQueriesContext(connection) as queries:
        response = api.get(f"{REPORTS}{queued}/")

    assert response.status_code == 200
    assert (response.json()["status"], response.json()["price"]["currency"]) == ("queued", "EUR")
    [read] = [query["sql"] for query in queries if "marketplace_report" in query["sql"]]
    assert '"result"' not in read
    assert "billing_quote" in read  # joined, not a query of its own
    assert [query["sql"] for query in queries if "billing_quote" in query["sql"]] == [read]


def test_wait_answers_as_soon_as_the_report_is_final(api, queued, monkeypatch, settings):
    settings.REPORT_WAIT_POLL_SECONDS = 0.01
    looks = []
    is_final = selectors._report_is_final

    def finished_after_the_first_look(report_id):
        looks.append(report_id)
        if len(looks) == 1:
            Report.objects.filter(pk=queued).update(status=Report.Status.SUCCEEDED, result={}, result_rows=0)
            return False
        return is_final(report_id)

    monkeypatch.setattr(selectors, "_report_is_final", finished_after_the_first_look)

    response = api.get(f"{REPORTS}{queued}/", {"wait": "20"})

    assert response.status_code == 200
    assert response.json()["status"] == "succeeded"
    assert len(looks) == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("spelled", [str, str.upper], ids=["as-given", "in-capitals"])
def test_a_waiting_request_is_woken_by_the_report_s_end_not_by_polling(api, city, settings, monkeypatch, spelled):
    """Its end is notified by PostgreSQL on commit (migration 0027), whichever path finishes it,
    however the id is spelled in the address."""
    settings.REPORT_WAIT_POLL_SECONDS = 30  # only the notification can end the wait early
    monkeypatch.setattr(outbox, "_send", lambda report_ids: len(report_ids))  # stays queued
    report_id = api.post(REPORTS, order_body(), format="json").json()["id"]

    def finish_a_moment_later():
        time.sleep(0.5)
        Report.objects.filter(pk=report_id).update(status=Report.Status.FAILED, error="gone")
        connection.close()

    finisher = threading.Thread(target=finish_a_moment_later)
    finisher.start()
    started = time.monotonic()
    response = api.get(f"{REPORTS}{spelled(report_id)}/", {"wait": "20"})
    waited = time.monotonic() - started
    finisher.join()

    assert response.json()["status"] == "failed"
    assert 0.4 < waited < 5


@pytest.mark.django_db(transaction=True)
def test_a_report_notified_final_a_moment_before_the_wait_is_not_read_again(api, city, monkeypatch):
    monkeypatch.setattr(outbox, "_send", lambda report_ids: len(report_ids))  # stays queued
    report_id = api.post(REPORTS, order_body(), format="json").json()["id"]
    api.get(f"{REPORTS}{report_id}/", {"wait": "0.5"})  # this process listens from here on
    Report.objects.filter(pk=report_id).update(status=Report.Status.FAILED, error="gone")
    deadline = time.monotonic() + 5
    while not report_waits.notified(report_id) and time.monotonic() < deadline:
        time.sleep(0.01)
    monkeypatch.setattr(selectors, "_report_is_final", lambda report_id: pytest.fail("it read the row"))

    waited = selectors.report_wait_final(report_id=report_id, seconds=20)

    assert waited < 1


def test_a_read_that_waits_reads_its_status_and_then_the_report_once(api, queued, settings):
    settings.REPORT_WAIT_POLL_SECONDS = 0.01

    with CaptureQueriesContext(connection) as queries:
        response = api.get(f"{REPORTS}{queued}/", {"wait": "0.05"})

    assert (response.status_code, response.json()["status"]) == (200, "queued")
    reads = [query["sql"] for query in queries if "FROM marketplace_report report" in query["sql"]]
    assert reads[0].startswith("SELECT report.status FROM")
    assert len([read for read in reads if "billing_quote" in read]) == 1  # the report itself, after the wait


def test_a_read_that_waits_for_a_report_of_another_organisation_is_a_404(queued, tenant, client_for):
    other = client_for(TenantFactory())

    assert_error(other.get(f"{REPORTS}{queued}/", {"wait": "20"}), 404, "not_found")


def test_wait_ends_with_the_report_still_queued(api, queued, settings):
    settings.REPORT_WAIT_POLL_SECONDS = 0.01

    response = api.get(f"{REPORTS}{queued}/", {"wait": "0.05"})

    assert (response.status_code, response.json()["status"]) == (200, "queued")


def test_without_a_free_wait_slot_the_answer_comes_at_once(api, queued, monkeypatch):
    monkeypatch.setattr(selectors, "_report_waits", threading.BoundedSemaphore(1))
    selectors._report_waits.acquire()  # another request of this process waits
    monkeypatch.setattr(selectors, "_report_is_final", lambda report_id: pytest.fail("it waited"))

    response = api.get(f"{REPORTS}{queued}/", {"wait": "20"})

    assert (response.status_code, response.json()["status"]) == (200, "queued")


@pytest.mark.parametrize("wait", ["-1", "21", "soon", "nan"])
def test_a_wait_out_of_bounds_is_refused(api, queued, wait):
    assert_error(api.get(f"{REPORTS}{queued}/", {"wait": wait}), 400, "invalid_wait", attr="wait")


def test_a_fast_report_writes_no_progress_and_a_slow_one_does(monkeypatch):
    written = []
    monkeypatch.setattr(runs, "_report_progress", lambda report_id, fraction: written.append(fraction))
    clock = iter([100.0, 100.2, 101.5, 101.6, 101.7])
    monkeypatch.setattr(runs.time, "monotonic", lambda: next(clock))

    write = runs._progress_writer("report")  # began at 100.0
    write(0.5)  # 0.2 s in: not yet
    write(0.9)  # 1.5 s in: written, at 101.6

    assert written == [0.9]
