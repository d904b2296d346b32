"""Probes, and the one error shape for requests that never reach a view's own logic."""

import pytest
from django.db import OperationalError
from rest_framework.test import APIClient

from marketplace import health
from marketplace.celery import app as celery_app
from marketplace.models import Area
from tests.errors import assert_error

UNREACHABLE_BROKER = "amqp://guest:guest@127.0.0.1:1//"


@pytest.fixture
def broker_down(monkeypatch):
    # Celery prefers CELERY_BROKER_URL from the environment (.env sets it) over its config.
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    monkeypatch.setattr(celery_app.conf, "broker_url", UNREACHABLE_BROKER)
    assert celery_app.conf.broker_write_url == UNREACHABLE_BROKER


def test_healthz_is_ok_without_authentication(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_checks_database_broker_and_cache(db, client):
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok", "cache": "ok"}}


def test_readyz_stays_ready_when_the_broker_is_unreachable_since_orders_wait_in_the_database(db, client, broker_down):
    response = client.get("/readyz")

    assert response.status_code == 200
    body = response.json()
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"].startswith("unreachable")


def test_readyz_is_503_when_the_database_is_unreachable(db, client, monkeypatch):
    class Unreachable:
        def cursor(self):
            raise OperationalError("connection refused")

    monkeypatch.setattr(health, "connection", Unreachable())

    response = client.get("/readyz")

    body = assert_error(response, 503, "not_ready", extra_keys=frozenset({"checks"}))
    assert body["checks"]["database"] == "unreachable (OperationalError)"
    assert [error["detail"] for error in body["errors"]] == [f"database: {body['checks']['database']}"]


def test_unknown_url_is_a_json_404(db, client, settings):
    assert settings.DEBUG is False

    response = client.get("/api/v1/nope/")

    assert_error(response, 404, "not_found")


def test_unknown_url_is_a_json_404_for_an_authenticated_caller(api):
    response = api.get("/api/v1/nope/")

    assert_error(response, 404, "not_found")


def test_method_not_allowed_is_405_in_the_error_shape(api):
    areas_before = Area.objects.count()

    response = api.put("/api/v1/areas/", {"name": "x"}, format="json")

    assert_error(response, 405, "method_not_allowed")
    assert Area.objects.count() == areas_before


def test_unauthenticated_client_gets_401_not_405(db):
    response = APIClient().put("/api/v1/areas/", {}, format="json")

    assert_error(response, 401, "not_authenticated")
