"""Liveness and readiness probes (no authentication)."""

from django.core.cache import cache
from django.db import connection
from django.http import JsonResponse

from marketplace.celery import app as celery_app
from marketplace.exceptions import error_body

BROKER_TIMEOUT_SECONDS = 2


def healthz(request) -> JsonResponse:
    return JsonResponse({"status": "ok"})


# What the API cannot answer without. Orders wait in the database for the broker (the outbox),
# and the rate limiter fails open without Redis: those two are reported, not required.
REQUIRED = ("database",)


def readyz(request) -> JsonResponse:
    checks = {"database": _check_database(), "broker": _check_broker(), "cache": _check_cache()}
    failing = [
        {"code": "not_ready", "detail": f"{name}: {problem}", "attr": None}
        for name, problem in checks.items()
        if problem != "ok" and name in REQUIRED
    ]
    if failing:
        return JsonResponse({**error_body(error_type="server_error", errors=failing), "checks": checks}, status=503)
    return JsonResponse({"status": "ok", "checks": checks})


def _check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:
        return f"unreachable ({type(exc).__name__})"
    return "ok"


def _check_cache() -> str:
    try:
        # Straight to Redis: the cache itself ignores its errors (it fails open).
        cache.client.get_client().ping()
    except Exception as exc:
        return f"unreachable ({type(exc).__name__}); the rate limiter lets requests through"
    return "ok"


def _check_broker() -> str:
    try:
        with celery_app.connection_for_write() as broker:
            broker.ensure_connection(max_retries=0, timeout=BROKER_TIMEOUT_SECONDS)  # one try, no back-off sleep
    except Exception as exc:
        return f"unreachable ({type(exc).__name__})"
    return "ok"
