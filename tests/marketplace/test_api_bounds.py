"""Hostile input answers 4xx in the one error shape, never 5xx: each input that once gave a 500."""

import json
import math

import pytest
from django.db import connection

from marketplace.api.bounds import json_nesting_depth
from marketplace.models import ApiKey, Area, Report, Role
from marketplace.services import areas as area_services
from tests import grid
from tests.errors import assert_error
from tests.marketplace.test_api_reports import REPORTS, order_body

HOSTILE_DATES = ["0001-01-01T00:00:00Z", "0001-01-01T00:00:00", "9999-12-31T23:59:59-12:00", "9999-12-31T23:00:00"]


@pytest.fixture
def owner(tenant, client_for):
    return client_for(tenant, Role.OWNER)


# --- dates ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", HOSTILE_DATES)
@pytest.mark.parametrize("name", ["created_after", "created_before"])
def test_a_filter_date_outside_the_supported_years_is_a_400(api, name, value):
    response = api.get(REPORTS, {name: value})

    assert_error(response, 400, "date_out_of_range", attr=name)


@pytest.mark.parametrize("value", HOSTILE_DATES)
@pytest.mark.parametrize("name", ["start", "end", "compare_start", "compare_end"])
def test_an_order_date_outside_the_supported_years_is_a_400(api, city, name, value):
    response = api.post(REPORTS, order_body(**{name: value}), format="json")

    assert_error(response, 400, "date_out_of_range", attr=name)
    assert Report.objects.count() == 0


def test_a_quote_date_outside_the_supported_years_is_a_400(api, city):
    response = api.post("/api/v1/quotes/", order_body(end="9999-12-31T23:00:00"), format="json")

    assert_error(response, 400, "date_out_of_range", attr="end")


@pytest.mark.parametrize("value", HOSTILE_DATES)
def test_a_key_expiry_outside_the_supported_years_is_a_400(owner, value):
    keys_before = ApiKey.objects.count()

    response = owner.post("/api/v1/api-keys/", {"name": "ci", "role": "analyst", "expires_at": value}, format="json")

    assert_error(response, 400, "date_out_of_range", attr="expires_at")
    assert ApiKey.objects.count() == keys_before


def test_dates_at_the_edges_of_the_supported_years_are_accepted(owner):
    response = owner.post(
        "/api/v1/api-keys/", {"name": "ci", "role": "analyst", "expires_at": "2100-12-31T23:59:59-12:00"}, format="json"
    )

    assert response.status_code == 201, response.content
    assert owner.get(REPORTS, {"created_after": "2000-01-01T00:00:00+14:00"}).status_code == 200


@pytest.mark.parametrize("period", ["9999-12", "0001-01", "1999-12"])
def test_a_usage_period_outside_the_supported_years_is_a_400(owner, period):
    response = owner.get("/api/v1/usage/", {"period": period})

    assert_error(response, 400, "invalid_period", attr="period")


# --- numbers and pages -----------------------------------------------------------------------


@pytest.mark.parametrize("url", [REPORTS, "/api/v1/areas/", "/api/v1/api-keys/", "/api/v1/members/"])
def test_a_huge_limit_is_clamped_and_a_huge_offset_is_an_empty_page(owner, url):
    huge = "99999999999999999999"

    clamped = owner.get(url, {"limit": huge})
    beyond = owner.get(url, {"limit": huge, "offset": huge})

    assert clamped.status_code == 200, clamped.content
    assert beyond.status_code == 200, beyond.content
    assert beyond.json()["results"] == []


def test_a_limit_over_the_maximum_returns_at_most_the_maximum(owner, tenant, settings):
    settings.API_MAX_PAGE_SIZE = 2
    for name in "abc":
        owner.post("/api/v1/api-keys/", {"name": name, "role": "viewer"}, format="json")

    page = owner.get("/api/v1/api-keys/", {"limit": 500}).json()

    assert len(page["results"]) == 2
    assert "limit=2" in page["next"]


@pytest.mark.parametrize("key", ["99999999999999999999", "-1", "1e400"])
def test_a_huge_or_odd_key_id_is_a_404(owner, key):
    assert_error(owner.get(f"/api/v1/api-keys/{key}/"), 404, "not_found")


# --- bodies ----------------------------------------------------------------------------------


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("url", [REPORTS, "/api/v1/areas/", "/api/v1/quotes/"])
def test_json_nested_50000_deep_is_a_400(api, url):
    response = api.post(url, nested(50_000), content_type="application/json")

    body = assert_error(response, 400, "parse_error")
    assert "deeper than 32 levels" in body["message"]


def test_json_nested_just_over_the_limit_is_refused_and_at_it_parsed(api):
    # the body object is the first level
    over = api.post("/api/v1/areas/", {"name": "x", "geometry": json.loads(nested(32))}, format="json")
    at = api.post("/api/v1/areas/", {"name": "x", "geometry": json.loads(nested(31))}, format="json")

    assert_error(over, 400, "parse_error")
    assert_error(at, 400, "invalid_geometry", attr="geometry")


def test_a_utf16_body_cannot_hide_its_nesting_from_the_count(api):
    # U+2200 is the bytes 00 22 in UTF-16-LE: a '"' to a count over the raw bytes, which would
    # then take the brackets after it for a string's content.
    body = ('["\u2200",' + nested(5_000) + "]").encode("utf-16-le")

    response = api.post(REPORTS, body, content_type="application/json; charset=utf-16-le")

    assert_error(response, 415, "unsupported_media_type")


def test_a_body_in_an_unknown_charset_is_read_as_utf8(api):
    response = api.post(REPORTS, b"{}", content_type="application/json; charset=no-such-charset")

    assert_error(response, 400, "required", attr="product")


def test_brackets_inside_strings_do_not_count_as_nesting():
    text = json.dumps({"name": "[[[[{{{{" * 100, "escaped": '\\"[[[['}).encode()

    assert json_nesting_depth(text, stop_above=32) == 1


@pytest.mark.parametrize("url", [REPORTS, "/api/v1/areas/", "/api/v1/api-keys/", "/billing/stripe/webhook/"])
def test_a_3_mb_body_is_a_413_in_the_error_shape(api, url):
    body = json.dumps({"name": "x" * 3_000_000})

    response = api.post(url, body, content_type="application/json")

    error = assert_error(response, 413, "request_too_large")
    assert "at most 2621440 bytes" in error["message"]


# --- geometry ----------------------------------------------------------------------------------


def ring(vertices: int) -> list[list[float]]:
    """A closed circle of short coordinates around the test grid, so the body stays small."""
    centre_lon, centre_lat = grid.geojson(grid.square(0, 0, 4, 4))["coordinates"][0][0]
    positions = [
        [
            round(centre_lon + 0.01 * math.cos(2 * math.pi * i / vertices), 5),
            round(centre_lat + 0.01 * math.sin(2 * math.pi * i / vertices), 5),
        ]
        for i in range(vertices - 1)
    ]
    return [*positions, positions[0]]


def test_a_95000_vertex_polygon_is_a_400_naming_the_field(api):
    geometry = {"type": "Polygon", "coordinates": [ring(95_000)]}

    response = api.post("/api/v1/areas/", {"name": "Spiky", "geometry": geometry}, format="json")

    body = assert_error(response, 400, "too_many_vertices", attr="geometry")
    assert "at most 10000 positions, got 95000" in body["message"]
    assert Area.objects.count() == 0


def test_a_comparison_geometry_over_the_vertex_limit_names_its_field(api, city):
    geometry = {"type": "Polygon", "coordinates": [ring(10_001)]}

    response = api.post(REPORTS, order_body(compare_geometry=geometry), format="json")

    assert_error(response, 400, "too_many_vertices", attr="compare_geometry")


def test_a_multipolygon_of_101_parts_is_a_400(api):
    square = grid.geojson(grid.square(0, 0, 1, 1))["coordinates"]
    geometry = {"type": "MultiPolygon", "coordinates": [square] * 101}

    response = api.post("/api/v1/areas/", {"name": "Confetti", "geometry": geometry}, format="json")

    assert_error(response, 400, "too_many_parts", attr="geometry")


def test_a_slow_area_measure_is_cut_off_with_a_400(api, city, settings, monkeypatch):
    settings.AREA_MEASURE_TIMEOUT_MS = 50

    def slow_cells(*, geometry):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(2)")

    monkeypatch.setattr(area_services.insights_selectors, "area_cells", slow_cells)

    response = api.post("/api/v1/areas/", {"name": "Slow", "geometry": order_body()["geometry"]}, format="json")

    assert_error(response, 400, "area_too_complex", attr="geometry")
    with connection.cursor() as cursor:  # the transaction goes on, without the cut-off
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == "0"
