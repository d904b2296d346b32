"""Attack fixtures: a village with a known small group, and the switches that turn a defence off."""

import datetime as dt
import random

import pytest

from insights import privacy
from insights.services import presence_load
from marketplace import services
from marketplace.services import product_grant
from tests import grid
from tests.factories import compare_product, dwell_product, footfall_product

UTC = dt.UTC
# Four local days around the spring DST change, in the village's cells.
START = dt.datetime(2026, 3, 26, 23, tzinfo=UTC)  # 27 March 00:00 in Berlin
END = dt.datetime(2026, 3, 30, 22, tzinfo=UTC)  # 31 March 00:00 in Berlin
# The block: 4 x 4 cells, 40 people an hour in each (25 aged 25-34, 15 aged 35-44).
BLOCK = [(col, row) for col in range(4) for row in range(4)]
# The small group: 3 people aged 65+ in cell (3, 3) from 10:00 to 12:00 UTC on 28 March;
# the cell is empty otherwise.
QUIET_CELL = (3, 3)
SMALL_GROUP = 3
GROUP_HOURS = [dt.datetime(2026, 3, 28, hour, tzinfo=UTC) for hour in (10, 11)]
# A second place, east of the block: 6 cells with 10 people an hour each, but at 03:00 UTC on
# 28 March only the small group is there. On 29 March one cell holds 9 (the smallest hour).
HAMLET = [(col, row) for col in (6, 7, 8) for row in (0, 1)]
EMPTY_HOUR = dt.datetime(2026, 3, 28, 3, tzinfo=UTC)
QUIET_HOUR_29 = dt.datetime(2026, 3, 29, 5, tzinfo=UTC)

DEFENCES = {
    "threshold": lambda patch: patch.setattr(privacy.Guard, "_below_threshold", lambda self, count: False),
    "secondary": lambda patch: patch.setattr(privacy.Guard, "_suppress_complementary", lambda self: None),
    "differencing": lambda patch: patch.setattr(services, "_check_differencing", lambda **kwargs: None),
    "budget": lambda patch: patch.setattr(services, "_check_budget", lambda **kwargs: 1),
    "history": lambda patch: patch.setattr(privacy.Guard, "earlier", lambda self, *args, **kwargs: None),
    "min-area": lambda patch: (
        patch.setattr(services, "_check_area_minimum", lambda *args, **kwargs: None),
        patch.setattr(services, "_check_cell_minimum", lambda *args, **kwargs: None),
    ),
    # Fresh noise for every question: what sticky noise prevents.
    "noise": lambda patch: patch.setattr(
        privacy.Guard, "_noise", lambda self, count: random.Random().gauss(0, 3 * self.policy.noise_scale)
    ),
}


@pytest.fixture(autouse=True)
def defences(request, monkeypatch):
    """Everything on, unless --without-defence NAME switches one off."""
    for name in request.config.getoption("--without-defence"):
        if name not in DEFENCES:
            raise pytest.UsageError(f"unknown defence {name!r}; one of {', '.join(DEFENCES)}")
        DEFENCES[name](monkeypatch)


def people(cell: tuple[int, int], hour: dt.datetime) -> dict[str, int]:
    """Who is in a cell in an hour, by age band ("*" is everyone)."""
    if cell == QUIET_CELL:
        group = SMALL_GROUP if hour in GROUP_HOURS else 0
        return {"*": group, "65+": group}
    if cell in HAMLET:
        if hour == EMPTY_HOUR:
            return {"*": SMALL_GROUP if cell == HAMLET[0] else 0}
        return {"*": 9 if hour == QUIET_HOUR_29 and cell == HAMLET[0] else 10}
    return {"*": 40, "25-34": 25, "35-44": 15}


@pytest.fixture
def village(db, tmp_path):
    rows = [
        (grid.code(*cell), hour, band, "*", count)
        for cell in BLOCK + HAMLET
        for hour in grid.hours(START, END)
        for band, count in people(cell, hour).items()
        if count
    ]
    grid.write_presence(tmp_path / "village.csv", rows)
    presence_load(path=tmp_path / "village.csv")


@pytest.fixture
def attacker(tenant, api):
    """A tenant with every presence product, ordering through the API."""
    for product in (footfall_product(), compare_product(), dwell_product()):
        product_grant(tenant=tenant, product=product)
    return api


@pytest.fixture
def order(attacker, django_capture_on_commit_callbacks):
    """Place an order and run it (eagerly); returns the response, and the report once computed."""

    def place(body: dict, client=None):
        with django_capture_on_commit_callbacks(execute=True):
            response = (client or attacker).post("/api/v1/reports/", body, format="json")
        if response.status_code != 201:
            return response, None
        report = (client or attacker).get(f"/api/v1/reports/{response.json()['id']}/").json()
        assert report["status"] == "succeeded", report
        return response, report

    return place


def body(polygon, *, granularity="day", start="2026-03-27T00:00:00+01:00", end="2026-03-31T00:00:00+02:00", **extra):
    return {
        "product": "footfall",
        "geometry": grid.geojson(polygon),
        "start": start,
        "end": end,
        "granularity": granularity,
        **extra,
    }


def leaks(result: dict, k: int, *, rounding: float = 0.0) -> list[str]:
    """Every way a value under k can be read or recomputed from one footfall result: a
    released value under k; a bucket's total minus its released segments; the buckets' sum
    minus the released cells (or the other way round).

    rounding: how far a released value may be from its exact value (0.5 when an area cuts
    cells, whose weighted counts are fractions); a difference is a leak only when it is
    certainly more than nobody and less than k."""
    found = []
    rows = result["series"] + result.get("segments", []) + result.get("cells", [])
    found += [f"released under k: {row}" for row in rows if row["visits"] is not None and row["visits"] < k]
    segments_by_bucket: dict[str, list[dict]] = {}
    for segment in result.get("segments", []):
        segments_by_bucket.setdefault(segment["start"], []).append(segment)
    for total in result["series"]:
        parts = segments_by_bucket.get(total["start"], [])
        found += rest_leaks(f"bucket {total['start']} minus its segments", [total], parts, k, rounding=rounding)
    if result.get("cells"):
        found += rest_leaks("the buckets minus the cells", result["series"], result["cells"], k, rounding=rounding)
    return found


def rest_leaks(what: str, left: list[dict], right: list[dict], k: int, *, rounding: float = 0.0) -> list[str]:
    """left and right add up to the same: what subtracting the released values gives away."""
    for side, other in ((left, right), (right, left)):
        if other and all(row["visits"] is not None for row in other):
            held = [row for row in side if row["visits"] is None]
            released = [row["visits"] for row in side if row["visits"] is not None]
            rest = sum(row["visits"] for row in other) - sum(released)
            error = rounding * (len(other) + len(released))
            if held and 0 < rest - error and rest + error < k:
                return [f"{what}: {rest} (within {error:g}) for {len(held)} withheld value(s)"]
    return []
