"""The compare product: two periods or two areas side by side, with the change."""

from collections import defaultdict
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from insights.releases import releases_build
from marketplace.models import Report
from marketplace.services import product_grant
from tests import grid
from tests.downloads import content
from tests.errors import assert_error
from tests.factories import compare_product, order_body
from tests.marketplace.released import threshold

BERLIN = ZoneInfo("Europe/Berlin")
REPORTS = "/api/v1/reports/"
WEST = grid.square(0, 0, 2, 2)  # cells (0..1, 0..1)
EAST = grid.square(2, 0, 2, 2)  # cells (2..3, 0..1)


@pytest.fixture
def compare_granted(tenant):
    product_grant(tenant=tenant, product=compare_product())
    return tenant


@pytest.fixture
def order(api, compare_granted, city, django_capture_on_commit_callbacks):
    def post(**fields):
        body = order_body(product="compare", geometry=grid.geojson(WEST), **fields)
        with django_capture_on_commit_callbacks(execute=True):
            return api.post(REPORTS, body, format="json")

    return post


def daily(city, cols) -> dict[str, int]:
    days = defaultdict(int)
    for ((col, row), hour), visits in city.items():
        if col in cols and row in (0, 1):
            days[hour.astimezone(BERLIN).date().isoformat()] += visits
    return days


def result_of(api, response) -> dict:
    assert response.status_code == 201, response.content
    return api.get(f"{REPORTS}{response.json()['id']}/").json()["result"]


def test_two_periods_side_by_side_with_the_change(api, city, order):
    result = result_of(
        api,
        order(
            start="2026-03-30T00:00:00+02:00",
            end="2026-04-01T00:00:00+02:00",
            compare_start="2026-03-27T00:00:00+01:00",
            compare_end="2026-03-29T00:00:00+01:00",
        ),
    )

    days = daily(city, cols=(0, 1))
    assert [(row["start"][:10], row["person_hours"]) for row in result["series"]] == [
        ("2026-03-30", days["2026-03-30"]),
        ("2026-03-31", days["2026-03-31"]),
    ]
    assert [(row["comparison_start"][:10], row["comparison_person_hours"]) for row in result["series"]] == [
        ("2026-03-27", days["2026-03-27"]),
        ("2026-03-28", days["2026-03-28"]),
    ]
    for row in result["series"]:  # the deprecated names, with the same values for one release
        assert (row["visits"], row["comparison_visits"]) == (row["person_hours"], row["comparison_person_hours"])
        assert (row["released_share"], row["comparison_released_share"]) == (1.0, 1.0)
        assert (row["suppressed"], row["comparison_suppressed"]) == (False, False)
    first = result["series"][0]
    assert first["change"] == days["2026-03-30"] - days["2026-03-27"]
    assert first["change_pct"] == round(100 * first["change"] / days["2026-03-27"], 1)
    assert result["comparison"] == {
        "start": "2026-03-27T00:00:00+01:00",
        "end": "2026-03-29T00:00:00+01:00",
        "other_area": False,
    }


def test_two_areas_side_by_side_over_the_same_period(api, city, order):
    result = result_of(
        api,
        order(
            start="2026-03-27T00:00:00+01:00",
            end="2026-03-29T00:00:00+01:00",
            compare_geometry=grid.geojson(EAST),
            compare_name="East",
        ),
    )

    west, east = daily(city, cols=(0, 1)), daily(city, cols=(2, 3))
    assert [(row["person_hours"], row["comparison_person_hours"], row["change"]) for row in result["series"]] == [
        (west[day], east[day], west[day] - east[day]) for day in ("2026-03-27", "2026-03-28")
    ]
    assert [row["comparison_visits"] for row in result["series"]] == [east["2026-03-27"], east["2026-03-28"]]
    assert result["privacy"]["cell_hours"] == result["privacy"]["cell_hours_released"] == 2 * 4 * 48
    report = Report.objects.get()
    assert (report.compare_area_name, report.compare_cell_count) == ("East", 4)


def test_no_change_is_given_next_to_a_withheld_number(api, city, order, settings):
    # The west's hourly values are at most 54: under k = 55 none is published. The east's
    # reach 55 in the afternoon.
    settings.PRIVACY_K = 55
    releases_build()
    result = result_of(
        api,
        order(
            start="2026-03-27T00:00:00+01:00",
            end="2026-03-28T00:00:00+01:00",
            compare_geometry=grid.geojson(EAST),
        ),
    )

    [row] = result["series"]
    east = {
        (cell, hour): value
        for (cell, hour), value in threshold(city, 55).items()
        if cell[0] in (2, 3) and cell[1] in (0, 1) and hour.astimezone(BERLIN).day == 27
    }
    assert (row["person_hours"], row["suppressed"], row["suppressed_reason"]) == (None, True, "not_released")
    assert (row["comparison_person_hours"], row["comparison_suppressed"]) == (sum(east.values()), False)
    assert row["comparison_released_share"] == round(len(east) / (4 * 24), 4)
    assert (row["change"], row["change_pct"]) == (None, None)
    assert result["privacy"]["suppressed_values"] == 1


PERIOD = {"start": "2026-03-30T00:00:00+02:00", "end": "2026-04-01T00:00:00+02:00"}


@pytest.mark.parametrize(
    "fields, code, attr",
    [
        (PERIOD, "comparison_required", None),
        (
            {
                **PERIOD,
                "compare_start": "2026-03-27T00:00:00+01:00",
                "compare_end": "2026-03-29T00:00:00+01:00",
                "compare_geometry": grid.geojson(EAST),
            },
            "comparison_required",
            None,
        ),
        ({**PERIOD, "compare_start": "2026-03-27T00:00:00+01:00"}, "comparison_period_incomplete", None),
        (
            {**PERIOD, "compare_start": "2026-03-27T00:00:00+01:00", "compare_end": "2026-03-30T00:00:00+02:00"},
            "comparison_length_differs",
            "compare_end",
        ),
        (
            {**PERIOD, "compare_start": "2026-03-20T00:00:00+01:00", "compare_end": "2026-03-22T00:00:00+01:00"},
            "outside_loaded_data",
            "compare_start",
        ),
        (
            {**PERIOD, "compare_start": "2026-03-27T06:00:00+01:00", "compare_end": "2026-03-29T06:00:00+01:00"},
            "not_on_bucket_boundary",
            "compare_start",
        ),
        ({**PERIOD, "compare_geometry": grid.geojson(grid.square(2, 0, 1, 1))}, "area_too_small", "compare_geometry"),
        ({**PERIOD, "compare_area": "8a3c9a52-0e55-4a46-b2cf-3f0f5fb1a4b1"}, "does_not_exist", "compare_area"),
    ],
)
def test_a_bad_comparison_is_refused_and_nothing_is_stored(order, fields, code, attr):
    assert_error(order(**fields), 400, code, attr=attr)
    assert Report.objects.count() == 0


def test_footfall_takes_no_comparison(api, city, django_capture_on_commit_callbacks):
    body = order_body(geometry=grid.geojson(WEST), **PERIOD, compare_geometry=grid.geojson(EAST))

    assert_error(api.post(REPORTS, body, format="json"), 400, "comparison_not_offered")
    assert Report.objects.count() == 0


def test_compare_needs_its_own_licence(api, city):
    compare_product()
    body = order_body(product="compare", geometry=grid.geojson(WEST), **PERIOD, compare_geometry=grid.geojson(EAST))

    assert_error(api.post(REPORTS, body, format="json"), 403, "product_not_granted")
    assert Report.objects.count() == 0


def test_a_comparison_downloads_with_its_columns(api, city, order):
    response = order(**PERIOD, compare_geometry=grid.geojson(EAST))
    report_id = response.json()["id"]
    series = result_of(api, response)["series"]

    csv_lines = b"".join(api.get(f"{REPORTS}{report_id}/result.csv").streaming_content).decode().splitlines()
    parquet = pq.read_table(pa.BufferReader(content(api.get(f"{REPORTS}{report_id}/result.parquet"))))
    png = api.get(f"{REPORTS}{report_id}/result.png")

    assert csv_lines[0] == (
        "start,end,hours,age_band,gender,person_hours,visits,average_present,released_share,suppressed,"
        "suppressed_reason,comparison_start,comparison_end,comparison_person_hours,comparison_visits,"
        "comparison_released_share,comparison_suppressed,comparison_suppressed_reason,change,change_pct"
    )
    assert len(csv_lines) == 1 + len(series)
    assert parquet.column("comparison_person_hours").to_pylist() == [row["comparison_person_hours"] for row in series]
    assert parquet.column("comparison_visits").to_pylist() == [row["comparison_person_hours"] for row in series]
    assert parquet.column("change").to_pylist() == [row["change"] for row in series]
    assert parquet.column("change_pct").to_pylist() == [row["change_pct"] for row in series]
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")


def test_a_comparison_has_no_map(api, city, order):
    response = order(**PERIOD, compare_geometry=grid.geojson(EAST))

    assert_error(api.get(f"{REPORTS}{response.json()['id']}/result.geojson"), 409, "format_not_offered")


def test_the_fair_use_quota_counts_the_comparison_area(api, city, order, settings):
    settings.PRIVACY_QUERY_BUDGET = 1
    compared = order(**PERIOD, compare_geometry=grid.geojson(EAST))
    assert compared.status_code == 201, compared.content
    assert compared.json()["query_budget_remaining"] == 0

    body = order_body(geometry=grid.geojson(EAST), **PERIOD)
    quoted = api.post("/api/v1/quotes/", body, format="json").json()
    refused = api.post(REPORTS, body, format="json")

    assert [check["code"] for check in quoted["checks"] if check["check"] == "fair_use"] == ["query_budget_exhausted"]
    assert quoted["orderable"] is False
    assert_error(refused, 403, "query_budget_exhausted")
    assert Report.objects.count() == 1


def test_the_fair_use_quota_counts_the_comparison_period(api, city, order, settings):
    settings.PRIVACY_QUERY_BUDGET = 1
    compared = order(
        start="2026-03-27T00:00:00+01:00",
        end="2026-03-28T00:00:00+01:00",
        compare_start="2026-03-30T00:00:00+02:00",
        compare_end="2026-03-31T00:00:00+02:00",
    )
    assert compared.status_code == 201, compared.content

    def footfall(start: str, end: str):
        return api.post(REPORTS, order_body(geometry=grid.geojson(WEST), start=start, end=end), format="json")

    assert_error(footfall("2026-03-30T00:00:00+02:00", "2026-03-31T00:00:00+02:00"), 403, "query_budget_exhausted")
    assert footfall("2026-03-28T00:00:00+01:00", "2026-03-29T00:00:00+01:00").status_code == 201  # overlaps neither


WIDE = grid.square(0, 0, 3, 2)  # WEST and half of EAST


def test_a_comparison_of_two_overlapping_areas_takes_two_of_the_quota(api, city, order, settings):
    """PRODUCT BUG (marketplace/services/order_checks.py, check_fair_use): each area of an order is checked
    against the tenant's earlier orders only, and `remaining` subtracts 1 per area. Two areas of
    one order that overlap (here WEST inside WIDE, same period) both count over WEST afterwards,
    so the order takes two of the quota there: with one left it must be refused, and with two
    left it leaves none."""
    settings.PRIVACY_QUERY_BUDGET = 2
    compared = order(**PERIOD, compare_geometry=grid.geojson(WIDE))
    assert compared.status_code == 201, compared.content
    over_west = order_body(geometry=grid.geojson(WEST), **PERIOD)
    assert_error(api.post(REPORTS, over_west, format="json"), 403, "query_budget_exhausted")  # 2 of 2 used

    assert compared.json()["query_budget_remaining"] == 0, "an order over WEST is refused, yet 1 is said to remain"


def test_a_comparison_of_two_overlapping_areas_is_refused_with_one_order_of_the_quota_left(api, city, order, settings):
    """PRODUCT BUG (marketplace/services/order_checks.py, check_fair_use), as above: with one order of the
    quota left over WEST, an order whose two areas both cover WEST would leave two counted there."""
    settings.PRIVACY_QUERY_BUDGET = 1

    response = order(**PERIOD, compare_geometry=grid.geojson(WIDE))

    assert_error(response, 403, "query_budget_exhausted")
    assert Report.objects.count() == 0
