"""The `footfall` command (client/) run as a buyer runs it: a process of its own, against the
live test server, with real Celery workers computing the reports. Nothing of the API is mocked."""

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings

from billing.models import Price
from marketplace.celery import app as celery_app
from marketplace.models import Role
from tests import grid
from tests.e2e.conftest import Workers
from tests.factories import footfall_product, raw_api_key

CLIENT_SRC = Path(settings.BASE_DIR) / "client" / "src"
DAY = {"start": "2026-03-27", "end": "2026-03-28"}  # a local day the `city` fixture loads (Berlin)


@pytest.fixture(autouse=True)
def eager_celery():
    """Reports go through the real broker to real workers."""
    celery_app.conf.task_always_eager = False
    yield


@pytest.fixture
def workers(transactional_db, tmp_path):
    started = Workers(tmp_path)
    started.start()
    yield started
    started.stop_all()


class Footfall:
    """Runs `python -m footfall ARGS` with the key in its environment, as FOOTFALL_KEY, and a
    home of its own (no config file but the test's). Every command line it ran is kept in `argv`."""

    def __init__(self, url: str, key: str, home: Path):
        self.home = home
        self.argv: list[list[str]] = []
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "PYTHONPATH": str(CLIENT_SRC),  # the checkout's client, installed or not
            "FOOTFALL_URL": url,
            "FOOTFALL_KEY": key,
            "COLUMNS": "200",
        }

    def __call__(self, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "footfall", *map(str, args)]
        self.argv.append(argv)
        environment = {**self.env, **(env or {})}
        environment = {name: value for name, value in environment.items() if value is not None}
        return subprocess.run(
            argv, env=environment, cwd=self.home, capture_output=True, text=True, timeout=timeout, check=False
        )


@pytest.fixture
def list_price(transactional_db):
    """The footfall list price the billing migration adds (the flush of transactional tests drops it)."""
    price, _ = Price.objects.get_or_create(
        product=footfall_product(), tenant=None, defaults={"unit": "cell_day", "unit_price": Decimal("0.002")}
    )
    return price


@pytest.fixture
def footfall(live_server, tenant, list_price, tmp_path) -> Footfall:
    home = tmp_path / "home"
    home.mkdir()
    return Footfall(live_server.url, raw_api_key(tenant, Role.ANALYST), home)


@pytest.fixture
def square_geojson(tmp_path) -> Path:
    """The 4 x 4 test block (1 km², 16 cells) as a GeoJSON FeatureCollection."""
    import json

    path = tmp_path / "block.geojson"
    feature = {"type": "Feature", "properties": {"name": "Block"}, "geometry": grid.geojson(grid.square(0, 0, 4, 4))}
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    return path
