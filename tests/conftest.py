import datetime as dt
import json
from zoneinfo import ZoneInfo

import pytest
from rest_framework.test import APIClient

from insights.kinds import DWELL_BANDS
from insights.services import dwell_load, home_load, regions_load, trips_load
from marketplace import report_waits
from marketplace.celery import app as celery_app
from marketplace.models import Role
from marketplace.services import outbox
from tests import grid
from tests.factories import granted_tenant, raw_api_key
from tests.stripe_fake import fake_stripe, localstripe  # noqa: F401 (fixtures)

UTC = dt.UTC


def pytest_addoption(parser):
    parser.addoption(
        "--without-defence",
        action="append",
        default=[],
        metavar="NAME",
        help="switch a privacy defence off, to watch the attack tests in tests/privacy/ fail"
        " (threshold, secondary, noise, min-area, budget)",
    )


@pytest.fixture(autouse=True)
def unrounded(settings):
    """The engine's numbers are checked against independent sums: released unrounded here.
    The privacy tests (tests/privacy/) set the guard as they need it."""
    settings.PRIVACY_ROUND_TO = 1


@pytest.fixture(autouse=True)
def unthrottled(settings):
    """Request limits are tested on their own (test_throttling.py); the fuzzer alone sends hundreds."""
    settings.API_REQUESTS_PER_MINUTE = 1_000_000
    # Every test client calls from 127.0.0.1: bad keys are limited in test_admin_hardening.py.
    settings.API_KEY_FAILURES_PER_IP = 1_000_000


@pytest.fixture(autouse=True)
def no_local_months(settings):
    """Releases land without writing the node's copy of the recent months (a few statements a
    month): the tests of that copy turn it on (tests/insights/test_local_months.py)."""
    settings.LOCAL_MONTHS_DIR = ""


@pytest.fixture(autouse=True)
def eager_celery():
    """Unit tests run tasks in-process; tests/e2e starts a real worker instead."""
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False


@pytest.fixture(autouse=True)
def broker_not_failed_lately(monkeypatch):
    """Each test starts with a broker the web tier sends to at once (a failed send in an earlier
    test would leave sending to the relay for a while)."""
    monkeypatch.setattr(outbox, "_broker_failed_at", None)


@pytest.fixture(autouse=True)
def report_wait_listener_stopped():
    """A test that waited on a report started this process's listener, whose connection would
    keep the test database from being dropped: stopped after each test (it starts again on use)."""
    yield
    report_waits.listener_stop()


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


# Regions over the test grid: two districts splitting the 4 x 4 city block, one north of
# it, and a municipality far away (a home region only).
REGION_SQUARES = {"W": (0, 0, 2, 4), "E": (2, 0, 2, 4), "N": (0, 4, 4, 4), "FAR": (40, 40, 4, 4)}
HOME_CELLS = [(0, 0), (1, 0), (0, 1), (1, 1)]


def home_visitors(cell: tuple[int, int], hour: dt.datetime, region: str) -> int:
    """Per home region; FAR is 3 an hour, under k hourly but not over a day."""
    col, row = cell
    return {"W": 20 + col + hour.hour % 4, "E": 8 + row, "N": 11, "FAR": 3}[region]


def trips_between(origin: str, destination: str, hour: dt.datetime) -> int | None:
    """Trips per hour; N -> E is 2 an hour (under k hourly), E -> N is absent (suppressed upstream)."""
    if (origin, destination) == ("E", "N"):
        return None
    if (origin, destination) == ("N", "E"):
        return 2
    return 10 + 3 * "WEN".index(origin) + "WEN".index(destination) + hour.hour % 5


@pytest.fixture
def regions(db, tmp_path):
    """Loads REGION_SQUARES; returns the GeoJSON file."""
    features = [
        {
            "type": "Feature",
            "properties": {"code": code, "name": f"Region {code}"},
            "geometry": grid.geojson(grid.square(*box)),
        }
        for code, box in REGION_SQUARES.items()
    ]
    path = tmp_path / "regions.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    regions_load(path=path)
    return path


@pytest.fixture
def home(regions, tmp_path):
    """Loads home counts of a 2 x 2 block over the dwell days (with the DST change);
    returns ({(cell, utc hour, region): visitors}, dataset version). The "*" row also counts
    9 people an hour whose home is unknown."""
    rows = {}
    for cell in HOME_CELLS:
        for hour in grid.hours(DWELL_START.astimezone(UTC), DWELL_END.astimezone(UTC)):
            by_region = {region: home_visitors(cell, hour, region) for region in REGION_SQUARES}
            rows |= {(cell, hour, region): value for region, value in by_region.items()}
            rows[(cell, hour, "*")] = sum(by_region.values()) + 9
    path = tmp_path / "home.csv"
    with path.open("w") as out:
        out.write("cell,hour,home_region,visitors\n")
        out.writelines(f"{grid.code(*c)},{h:%Y-%m-%dT%H:%M:%SZ},{r},{v}\n" for (c, h, r), v in rows.items())
    return rows, home_load(path=path).version


@pytest.fixture
def trips(regions, tmp_path):
    """Loads trips between W, E and N over the dwell days.

    Returns ({(origin, destination, utc hour): trips}, dataset version)."""
    rows = {
        (origin, destination, hour): trips_between(origin, destination, hour)
        for origin in "WEN"
        for destination in "WEN"
        for hour in grid.hours(DWELL_START.astimezone(UTC), DWELL_END.astimezone(UTC))
        if trips_between(origin, destination, hour) is not None
    }
    path = tmp_path / "trips.csv"
    with path.open("w") as out:
        out.write("origin,destination,hour,trips\n")
        out.writelines(f"{o},{d},{h:%Y-%m-%dT%H:%M:%SZ},{v}\n" for (o, d, h), v in rows.items())
    return rows, trips_load(path=path).version
