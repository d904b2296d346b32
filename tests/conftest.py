import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from rest_framework.test import APIClient

from insights.kinds import DWELL_BANDS
from insights.services import dwell_load
from marketplace.celery import app as celery_app
from marketplace.models import Role
from tests import grid
from tests.factories import granted_tenant, raw_api_key

UTC = dt.UTC


@pytest.fixture(autouse=True)
def eager_celery():
    """Unit tests run tasks in-process; tests/e2e starts a real worker instead."""
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False


@pytest.fixture
def tenant(db):
    return granted_tenant()


@pytest.fixture
def client_for():
    """An API client that authenticates with a fresh key of the given tenant and role."""

    def make(tenant, role: str = Role.ANALYST) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw_api_key(tenant, role)}")
        return client

    return make


@pytest.fixture
def api(tenant, client_for) -> APIClient:
    return client_for(tenant)


# A 4 x 4 block of cells (1 km²) with counts for the week of the spring DST change:
# local 2026-03-27 00:00 to 2026-04-01 00:00 in Europe/Berlin.
CITY_CELLS = [(col, row) for col in range(4) for row in range(4)]
CITY_START = dt.datetime(2026, 3, 26, 23, tzinfo=UTC)
CITY_END = dt.datetime(2026, 3, 31, 22, tzinfo=UTC)


def city_visits(cell: tuple[int, int], hour: dt.datetime) -> int:
    col, row = cell
    return 20 + 10 * col + row + hour.hour


@pytest.fixture
def city(db, tmp_path):
    """Loads the test city; returns {(cell, utc hour): visits}."""
    return grid.load_totals(tmp_path / "city.csv", cells=CITY_CELLS, start=CITY_START, end=CITY_END, visits=city_visits)


# Dwell counts for a 2 x 2 block over four local days (27 to 31 March 2026, Berlin).
DWELL_START = dt.datetime(2026, 3, 27, tzinfo=ZoneInfo("Europe/Berlin"))
DWELL_END = dt.datetime(2026, 3, 31, tzinfo=ZoneInfo("Europe/Berlin"))


def dwell_visitors(cell: tuple[int, int], hour: dt.datetime, band: str) -> int:
    col, row = cell
    return 12 + 7 * DWELL_BANDS.index(band) + col + row + hour.hour % 3


@pytest.fixture
def dwell(db, tmp_path):
    """Loads the dwell block; returns ({(cell, utc hour, band): visitors}, dataset version)."""
    rows = {
        (cell, hour, band): dwell_visitors(cell, hour, band)
        for cell in [(0, 0), (1, 0), (0, 1), (1, 1)]
        for hour in grid.hours(DWELL_START.astimezone(UTC), DWELL_END.astimezone(UTC))
        for band in DWELL_BANDS
    }
    path = tmp_path / "dwell.csv"
    with path.open("w") as out:
        out.write("cell,hour,dwell_band,visitors\n")
        out.writelines(f"{grid.code(*c)},{h:%Y-%m-%dT%H:%M:%SZ},{b},{v}\n" for (c, h, b), v in rows.items())
    return rows, dwell_load(path=path).version
