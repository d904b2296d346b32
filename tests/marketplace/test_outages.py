"""What a database, broker or Redis that is down or slow costs a buyer: nothing ordered is lost,
requests do not wait on what is down, and the API says when to come back."""

import dataclasses
import os
import socket
import threading
import time
from pathlib import Path

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.db import OperationalError, connection

from insights.products import PRODUCTS
from marketplace import selectors, tasks
from marketplace.celery import app as celery_app
from marketplace.models import Report
from marketplace.services import admission, outbox, reports_requeue_stuck, runs
from tests.errors import assert_error
from tests.factories import five_day_order_body

REPORTS = "/api/v1/reports/"
QUOTES = "/api/v1/quotes/"


@pytest.fixture
def broker_down(monkeypatch):
    """Every send to the broker fails, as when it is down; returns the sends tried."""
    tried = []

    def refused(args, **kwargs):
        tried.append(args[0])
        raise ConnectionRefusedError("broker down")

    monkeypatch.setattr(tasks.compute_report, "apply_async", refused)
    return tried


def order(api, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(REPORTS, five_day_order_body(), format="json")
    assert response.status_code == 201, response.content
    return Report.objects.get(pk=response.json()["id"])


# --- the outbox -----------------------------------------------------------------------


def test_an_order_placed_while_the_broker_is_down_is_sent_by_the_relay_once_it_is_back(
    api, city, django_capture_on_commit_callbacks, monkeypatch, broker_down
):
    # Given two orders while the broker is down
    first = order(api, django_capture_on_commit_callbacks)
    second = order(api, django_capture_on_commit_callbacks)

    # Then both are kept, unsent; the second request did not even try the broker
    assert [report.status for report in (first, second)] == ["queued", "queued"]
    assert Report.objects.filter(published_at__isnull=True).count() == 2
    assert broker_down == [str(first.pk)]

    # When the broker is back and the relay runs
    monkeypatch.undo()
    assert tasks.publish_pending_reports() == 2

    # Then both are computed, and nothing is left to send
    assert sorted(Report.objects.values_list("status", flat=True)) == ["succeeded", "succeeded"]
    assert tasks.publish_pending_reports() == 0


def test_the_relay_never_sends_a_report_twice_nor_a_cancelled_one(
    api, city, django_capture_on_commit_callbacks, monkeypatch, broker_down
):
    kept = order(api, django_capture_on_commit_callbacks)
    cancelled = order(api, django_capture_on_commit_callbacks)
    api.post(f"{REPORTS}{cancelled.pk}/cancel/")
    monkeypatch.undo()
    sent = []
    monkeypatch.setattr(tasks.compute_report, "apply_async", lambda args, **kwargs: sent.append(args[0]))

    outbox.reports_publish_pending()
    outbox.reports_publish_pending()
    outbox.report_publish(kept.pk)

    assert sent == [str(kept.pk)]


def test_a_broker_that_accepts_connections_but_never_answers_holds_an_order_about_a_second(
    api, city, django_capture_on_commit_callbacks, monkeypatch, settings
):
    # Given a broker that accepts connections and then says nothing
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    accepted = []
    threading.Thread(target=lambda: accepted.append(silent.accept()), daemon=True).start()
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    monkeypatch.setattr(celery_app.conf, "broker_url", f"amqp://guest:guest@127.0.0.1:{silent.getsockname()[1]}//")
    celery_app.conf.task_always_eager = False  # eager_celery (tests/conftest.py) sets it back
    # Connections of their own, to the silent broker (the real broker's are put back after)
    monkeypatch.setattr(celery_app, "_pool", None)
    monkeypatch.setattr(celery_app.amqp, "_producer_pool", None)
    monkeypatch.setattr(outbox, "_connection", None)

    # When an order is placed
    started = time.monotonic()
    try:
        report = order(api, django_capture_on_commit_callbacks)
    finally:
        waited = time.monotonic() - started
        celery_app.pool.force_close_all()
        outbox.producers().force_close_all()

    # Then it is taken and left to the relay; the request waited on the broker only its connect timeout
    assert (report.status, report.published_at) == ("queued", None)
    assert waited < 10 * settings.CELERY_BROKER_CONNECTION_TIMEOUT, waited  # not the ~4 s per try before
    silent.close()


# --- reports that keep failing ----------------------------------------------------------


def test_a_report_whose_query_the_statement_timeout_cancels_fails_at_once_with_a_reason(
    api, city, django_capture_on_commit_callbacks, monkeypatch
):
    def cancelled(query, **kwargs):
        try:
            raise psycopg.errors.QueryCanceled("canceling statement due to statement timeout")
        except psycopg.errors.QueryCanceled as cause:
            raise OperationalError("canceling statement due to statement timeout") from cause

    monkeypatch.setitem(PRODUCTS, "footfall", _computed_by(PRODUCTS["footfall"], cancelled))

    report = order(api, django_capture_on_commit_callbacks)

    report.refresh_from_db()
    assert (report.status, report.attempts) == ("failed", 1)
    assert report.error == "the report could not be computed (QueryCanceled); our team was notified"


def test_a_report_that_fails_every_attempt_fails_after_the_last_and_frees_its_slot(
    api, city, django_capture_on_commit_callbacks, monkeypatch, settings
):
    settings.REPORT_MAX_ATTEMPTS = 3

    def connection_lost(query, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setitem(PRODUCTS, "footfall", _computed_by(PRODUCTS["footfall"], connection_lost))

    # Given a report whose every run loses its connection (each sweep finds it running, unheld)
    report = order(api, django_capture_on_commit_callbacks)
    for _ in range(settings.REPORT_MAX_ATTEMPTS):
        reports_requeue_stuck()

    # Then after the last attempt it fails, with a reason, and no longer counts as in progress
    report.refresh_from_db()
    assert report.status == "failed"
    assert report.error == "the report could not be computed in 3 attempts; our team was notified"
    assert not Report.objects.filter(status__in=["queued", "running"]).exists()


def test_a_report_whose_claim_the_statement_timeout_cancels_fails_after_the_last_attempt(
    api, city, django_capture_on_commit_callbacks, monkeypatch, settings
):
    # bench/faults' poison worker: its every statement cancelled, the report was never claimed
    # (so never counted), and each message was retried for ten minutes, then dropped.
    settings.REPORT_MAX_ATTEMPTS = 3
    tries = []

    def cancelled(report_id):
        tries.append(report_id)
        try:
            raise psycopg.errors.QueryCanceled("canceling statement due to statement timeout")
        except psycopg.errors.QueryCanceled as cause:
            raise OperationalError("canceling statement due to statement timeout") from cause

    monkeypatch.setattr(runs, "_report_claim", cancelled)

    report = order(api, django_capture_on_commit_callbacks)

    # Then it fails after the last attempt, with a reason, and frees the tenant's slot
    report.refresh_from_db()
    assert len(tries) == settings.REPORT_MAX_ATTEMPTS
    assert (report.status, report.attempts) == ("failed", 0)
    assert report.error == "the report could not be computed (QueryCanceled); our team was notified"
    assert not Report.objects.filter(status__in=["queued", "running"]).exists()


def _computed_by(product, engine):
    return dataclasses.replace(product, compute=engine)


# --- the database and Redis ---------------------------------------------------------------


def test_a_request_while_the_database_is_away_is_a_503_with_retry_after(api, monkeypatch):
    def away(**kwargs):
        raise OperationalError("connection to server failed: Connection refused")

    monkeypatch.setattr(selectors, "area_visible_list", away)

    response = api.get("/api/v1/areas/")

    assert_error(response, 503, "database_unavailable", error_type="server_error")
    assert response["Retry-After"] == "5"


def test_the_api_answers_when_redis_is_down_and_the_rate_limiter_lets_requests_through(api, settings):
    settings.API_REQUESTS_PER_MINUTE = 2
    settings.CACHES = {
        "default": {
            **settings.CACHES["default"],
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens there
        }
    }

    statuses = [api.get("/api/v1/products/").status_code for _ in range(4)]

    assert statuses == [200, 200, 200, 200]


# --- admission ------------------------------------------------------------------------------


@pytest.fixture
def every_admission_slot_taken(db, settings):
    """Another session holds every slot, as that many requests being checked would."""
    db_settings = connection.settings_dict
    with psycopg.connect(
        dbname=db_settings["NAME"], host=db_settings["HOST"], port=db_settings["PORT"] or 5432, user=db_settings["USER"]
    ) as other:
        for slot in range(settings.ORDER_ADMISSION_SLOTS):
            other.execute("SELECT pg_advisory_lock(%s, %s)", [admission.ADMISSION_LOCK, slot])
        yield


def test_an_order_or_quote_past_the_admission_slots_is_a_503_at_once(api, city, every_admission_slot_taken):
    for path in (REPORTS, QUOTES):
        response = api.post(path, five_day_order_body(), format="json")

        assert_error(response, 503, "service_busy", error_type="server_error")
        assert response["Retry-After"] == "2"
    assert not Report.objects.exists()


def test_an_order_is_refused_while_the_service_has_as_many_reports_waiting_as_it_takes(
    api, city, django_capture_on_commit_callbacks, settings, broker_down
):
    order(api, django_capture_on_commit_callbacks)
    settings.MAX_REPORTS_IN_PROGRESS_SERVICE_WIDE = 1

    response = api.post(REPORTS, five_day_order_body(), format="json")

    assert_error(response, 503, "service_busy", error_type="server_error")
    assert Report.objects.count() == 1


def test_a_slot_is_given_back_when_the_order_is_refused(api, city, settings):
    settings.ORDER_ADMISSION_SLOTS = 1

    refused = api.post(REPORTS, five_day_order_body(granularity="fortnight"), format="json")
    placed = api.post(REPORTS, five_day_order_body(), format="json")

    assert (refused.status_code, placed.status_code) == (400, 201)


# --- the worker's liveness ----------------------------------------------------------------


def test_worker_alive_reads_the_heartbeat_file(tmp_path, settings):
    settings.WORKER_HEARTBEAT_FILE = str(tmp_path / "heartbeat")
    with pytest.raises(CommandError, match="has not started"):
        call_command("worker_alive")

    Path(settings.WORKER_HEARTBEAT_FILE).touch()
    call_command("worker_alive")

    stale = time.time() - 4 * settings.WORKER_HEARTBEAT_SECONDS
    os.utime(settings.WORKER_HEARTBEAT_FILE, (stale, stale))
    with pytest.raises(CommandError, match="last heartbeat is"):
        call_command("worker_alive")


def test_an_order_waits_a_moment_for_a_slot_being_freed(api, city, settings):
    settings.ORDER_ADMISSION_SLOTS = 1
    settings.ADMISSION_WAIT_SECONDS = 5
    db_settings = connection.settings_dict
    with psycopg.connect(
        dbname=db_settings["NAME"], host=db_settings["HOST"], port=db_settings["PORT"] or 5432, user=db_settings["USER"]
    ) as other:
        other.execute("SELECT pg_advisory_lock(%s, 0)", [admission.ADMISSION_LOCK])  # a request being checked
        threading.Timer(0.3, other.execute, ["SELECT pg_advisory_unlock(%s, 0)", [admission.ADMISSION_LOCK]]).start()
        started = time.monotonic()

        response = api.post(REPORTS, five_day_order_body(), format="json")

    assert response.status_code == 201
    assert 0.2 < time.monotonic() - started < 5


def test_past_the_admission_wait_an_order_is_a_503(api, city, every_admission_slot_taken, settings):
    settings.ADMISSION_WAIT_SECONDS = 0.2
    started = time.monotonic()

    response = api.post(REPORTS, five_day_order_body(), format="json")

    assert_error(response, 503, "service_busy", error_type="server_error")
    assert 0.2 <= time.monotonic() - started < 2
