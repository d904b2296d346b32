"""What the release tests share: the policy they start from, the hour and cell they load, and
helpers that build loaded rows and read what was withheld."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from tests.insights.conftest import as_stored, published

UTC = dt.UTC
BERLIN = ZoneInfo("Europe/Berlin")
HOUR = dt.timedelta(hours=1)
H = dt.datetime(2026, 3, 10, 10, tzinfo=UTC)
CELL = (0, 0)
AGES = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")


@pytest.fixture(autouse=True)
def policy_settings(settings):
    """The policy every test starts from (tests/conftest.py makes it unrounded)."""
    settings.PRIVACY_K = 10
    settings.PRIVACY_NOISE_SCALE = 0.0
    settings.PRIVACY_NOISE_SECRET = "release tests"


def by_age(total: int | None, bands: dict[str, int], *, hour=H, cell=CELL) -> dict:
    """One cell-hour's age table for everyone (gender *): the total and the bands given."""
    rows = {} if total is None else {(cell, hour, "*", "*"): total}
    return rows | {(cell, hour, band, "*"): value for band, value in bands.items()}


def withheld(rows: dict, kind: str = "presence") -> dict:
    """The loaded rows that have no released row: {key: loaded value}."""
    shown = published(kind)
    stored = as_stored(kind, rows)
    return {key: value for (key, value), at in zip(rows.items(), stored, strict=True) if at not in shown}


def rest_and_hidden(rows: dict, released: set, *, total: tuple, parts: list[tuple], domain: int) -> tuple[int, int]:
    """What a buyer can subtract: the total minus the released parts, over how many hidden parts."""
    shown = [key for key in parts if key in released]
    return rows[total] - sum(rows[key] for key in shown), domain - len(shown)
