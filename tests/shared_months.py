"""What the tests of the months report workers share (insights/shared.py) have in common: each
test's entries under a prefix of its own, and a count of what reads fetch from PostgreSQL."""

import uuid

import pytest
import redis

import insights.held
from insights import shared
from insights.sums import caches_clear

PREFIX = "test-shared-months"


@pytest.fixture(autouse=True)
def own_prefix(settings, monkeypatch):
    """Each test's entries and budget under a prefix of its own, Redis asked from the start.
    Autouse in a module that imports it."""
    settings.SHARED_MONTHS_PREFIX = f"{PREFIX}-{uuid.uuid4().hex}"
    monkeypatch.setattr(shared, "_down_until", 0.0)
    caches_clear()
    yield
    caches_clear()
    client = redis.Redis.from_url(settings.REDIS_URL)
    # Every test's: a write left pending by one test may be flushed in the next.
    for name in client.scan_iter(match=f"{PREFIX}-*"):
        client.delete(name)


def reads_counted(monkeypatch) -> list:
    """The place-months each read of the database fetches, from here on."""
    fetched = []
    fetch = insights.held._fetch

    def counted(read, places, months, versions, missing):
        fetched.extend(missing)
        return fetch(read, places, months, versions, missing)

    monkeypatch.setattr(insights.held, "_fetch", counted)
    return fetched
