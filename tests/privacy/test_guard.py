"""The guard wraps every product, holds for any polygon and period, and refuses bad settings."""

import os
import subprocess
import sys

import pytest
from django.conf import settings as django_settings
from django.db import IntegrityError
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from insights.kinds import PRODUCT_KINDS
from insights.privacy import Policy
from marketplace.models import Product
from marketplace.services import product_grant
from tests import grid
from tests.factories import catchment_product, compare_product, dwell_product, footfall_product, od_matrix_product
from tests.privacy.conftest import body, leaks

K = 10
ROUND_TO = 7  # an odd base no count of the fixtures happens to be a multiple of
PERIOD = {"start": "2026-03-27T00:00:00+01:00", "end": "2026-03-31T00:00:00+02:00", "granularity": "day"}
# One order per product in the catalog, over the fixtures of tests/conftest.py.
ORDERS = {
    "footfall": {"product": "footfall", "geometry": grid.geojson(grid.square(0, 0, 2, 2)), "breakdowns": ["gender"]},
    "compare": {
        "product": "compare",
        "geometry": grid.geojson(grid.square(0, 0, 2, 2)),
        "compare_geometry": grid.geojson(grid.square(2, 2, 2, 2)),
    },
    "dwell": {"product": "dwell", "geometry": grid.geojson(grid.square(0, 0, 2, 2))},
    "catchment": {"product": "catchment", "geometry": grid.geojson(grid.square(0, 0, 2, 2))},
    "od-matrix": {"product": "od-matrix", "geometry": grid.geojson(grid.square(0, 0, 4, 8))},
}
COUNTED = {"visits", "visitors", "trips", "comparison_visits"}


def released_numbers(document) -> list[int]:
    """Every count in a result document: the values of counted fields, and the od matrix."""
    if isinstance(document, dict):
        found = [value for key, value in document.items() if key in COUNTED and isinstance(value, int)]
        for key, value in document.items():
            if key == "matrix":
                found += [number for row in value for number in row if number is not None]
            elif isinstance(value, dict | list):
                found += released_numbers(value)
        return found
    if isinstance(document, list):
        return [number for item in document for number in released_numbers(item)]
    return []


def test_every_product_goes_through_the_guard(api, tenant, city, dwell, home, trips, settings, order_now):
    settings.PRIVACY_ROUND_TO = ROUND_TO
    for product in (footfall_product(), compare_product(), dwell_product(), catchment_product(), od_matrix_product()):
        product_grant(tenant=tenant, product=product)

    assert set(ORDERS) == set(PRODUCT_KINDS), "a product has no order here: add one, so the guard is checked on it"
    for code in PRODUCT_KINDS:
        report = order_now({**ORDERS[code], **PERIOD})
        numbers = released_numbers(report["result"])
        assert numbers, code
        assert all(number % ROUND_TO == 0 and number >= K for number in numbers), f"{code} bypasses the guard"
        assert report["result"]["privacy"]["round_to"] == ROUND_TO


@pytest.fixture
def order_now(api, django_capture_on_commit_callbacks):
    def place(order: dict) -> dict:
        with django_capture_on_commit_callbacks(execute=True):
            response = api.post("/api/v1/reports/", order, format="json")
        assert response.status_code == 201, response.content
        report = api.get(f"/api/v1/reports/{response.json()['id']}/").json()
        assert report["status"] == "succeeded", report
        return report

    return place


@given(
    col=st.floats(0, 2),
    row=st.floats(0, 2),
    width=st.floats(2, 4),
    height=st.floats(2, 4),
    first_day=st.integers(0, 3),
    days=st.integers(1, 4),
    granularity=st.sampled_from(["hour", "day"]),
    breakdown=st.booleans(),
)
@hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_no_polygon_or_period_releases_a_value_under_k(
    village, order, col, row, width, height, first_day, days, granularity, breakdown
):
    width, height = min(width, 4 - col), min(height, 4 - row)
    start = f"2026-03-{27 + first_day}T00:00:00+01:00"
    last = min(first_day + days, 4)
    end = f"2026-03-{27 + last}T00:00:00{'+02:00' if 27 + last >= 30 else '+01:00'}" if last > first_day else None
    if end is None:
        return
    response, report = order(
        body(
            grid.square(col, row, width, height),
            granularity=granularity,
            start=start,
            end=end,
            breakdowns=["age_band"] if breakdown else [],
        )
    )

    if report is None:  # refused: too small, too like an earlier area, or over the budget
        assert response.status_code in (400, 403), response.content
        return
    assert leaks(report["result"], K, rounding=0.5) == []


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [("PRIVACY_K", "1", "k must be at least 2"), ("AREA_MIN_KM2", "-0.5", "min_area_km2 must not be negative")],
)
def test_bad_privacy_settings_refuse_to_start(variable, value, problem):
    started = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "marketplace.settings", variable: value},
        cwd=django_settings.BASE_DIR,
        capture_output=True,
        text=True,
    )

    assert started.returncode != 0
    assert problem in started.stderr


def test_a_product_cannot_be_given_a_bad_threshold(db):
    with pytest.raises(ValueError, match="k must be at least 2"):
        Policy(k=1, round_to=1, min_area_km2=0.25, min_cells=4, noise_scale=0, query_budget=1)
    with pytest.raises(IntegrityError):
        Product.objects.create(code="tiny-k", name="Tiny k", privacy_k=1)
