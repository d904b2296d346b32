"""The OpenAPI schema: it validates without warnings, lists the API, and is served with its docs."""

import io

import pytest
import yaml
from django.core.management import call_command
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.plumbing import _load_enum_name_overrides
from rest_framework.test import APIClient

from insights.products import PRODUCTS

EXPECTED_PATHS = {
    "/api/v1/members/",
    "/api/v1/members/{id}/",
    "/api/v1/webhooks/",
    "/api/v1/webhooks/{id}/",
    "/api/v1/webhooks/{id}/deliveries/",
    "/api/v1/webhooks/{id}/test/",
    "/api/v1/api-keys/",
    "/api/v1/api-keys/{id}/",
    "/api/v1/api-keys/{id}/revoke/",
    "/api/v1/api-keys/{id}/rotate/",
    "/api/v1/areas/{id}/share/",
    "/api/v1/reports/{id}/share/",
    "/api/v1/areas/",
    "/api/v1/areas/{id}/",
    "/api/v1/reports/",
    "/api/v1/reports/{id}/",
    "/api/v1/reports/{id}/cancel/",
    "/api/v1/reports/{id}/rows/",
    "/api/v1/reports/{id}/result.csv",
    "/api/v1/reports/{id}/result.json",
    "/api/v1/reports/{id}/result.parquet",
    "/api/v1/reports/{id}/result.png",
    "/api/v1/reports/{id}/result.geojson",
    "/api/v1/products/",
    "/api/v1/regions/",
    "/api/v1/quotes/",
    "/api/v1/organisation/",
    "/api/v1/usage/",
    "/api/v1/invoices/",
}


@pytest.fixture(scope="module")
def schema_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("schema") / "openapi.yaml"
    call_command("spectacular", "--file", str(path), stderr=io.StringIO())
    return path


@pytest.fixture(scope="module")
def schema(schema_file) -> dict:
    return yaml.safe_load(schema_file.read_text())


def test_the_schema_validates_without_warnings(tmp_path):
    # warnings are counted process-wide and enum overrides cached: count only this run's
    GENERATOR_STATS.reset()
    _load_enum_name_overrides.cache_clear()
    path = tmp_path / "openapi.yaml"
    stderr = io.StringIO()

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(path), stderr=stderr)

    assert path.stat().st_size > 0, stderr.getvalue()


def test_the_schema_lists_the_api(schema):
    assert set(schema["paths"]) == EXPECTED_PATHS


def test_path_ids_are_typed_as_uuids(schema):
    for path in ("/api/v1/areas/{id}/", "/api/v1/reports/{id}/", "/api/v1/reports/{id}/result.csv"):
        operation = next(iter(schema["paths"][path].values()))
        [parameter] = [p for p in operation["parameters"] if p["name"] == "id"]
        assert parameter["schema"] == {"type": "string", "format": "uuid"}, path


def test_the_csv_download_is_documented_as_csv(schema):
    responses = schema["paths"]["/api/v1/reports/{id}/result.csv"]["get"]["responses"]

    assert list(responses["200"]["content"]) == ["text/csv"]


def test_the_api_key_scheme_is_documented(schema):
    assert schema["components"]["securitySchemes"]["ApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "`Api-Key <key>`: the key printed once when it was created",
    }


def test_report_status_has_its_configured_enum_name(schema):
    # ENUM_NAME_OVERRIDES names the report status enum ReportStatusEnum
    schemas = schema["components"]["schemas"]

    assert "StatusEnum" not in schemas
    assert schemas["ReportStatusEnum"]["enum"] == ["queued", "running", "succeeded", "failed", "cancelled"]


def test_docs_are_served_without_authentication(db):
    response = APIClient().get("/api/v1/docs/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert b"swagger" in response.content.lower()


def test_schema_is_served_without_authentication(db):
    response = APIClient().get("/api/v1/schema/")

    assert response.status_code == 200
    served = yaml.safe_load(response.content)
    assert served["info"]["title"] == "Footfall marketplace API"
    assert set(served["paths"]) == EXPECTED_PATHS


def test_the_result_names_each_metric_and_documents_the_deprecated_names(schema):
    description = schema["components"]["schemas"]["ReportOutput"]["properties"]["result"]["description"]
    current, deprecated = description.split("Deprecated, kept for one release with the same values:")

    for product, metric in ((code, spec.metric) for code, spec in PRODUCTS.items()):
        assert f"`{metric.name}`" in current, product
        if metric.deprecated:
            assert f"`{metric.deprecated}`" in deprecated and f"use `{metric.name}`" in deprecated, product
    assert "`average_present`" in current
    assert "`comparison_visits` (use `comparison_person_hours`)" in deprecated
    assert "`visits` (footfall, compare; use `person_hours`)" in deprecated
    assert "`visitors` (dwell: use `visits`; catchment: use `person_hours`)" in deprecated


def test_a_quotes_checks_are_documented_with_fair_use(schema):
    checks = schema["components"]["schemas"]["QuoteCheck"]["properties"]["check"]["description"]

    assert checks.split(", ") == [
        "entitlement",
        "privacy_minimums",
        "licensed_region",
        "payment",
        "reports_in_progress",
        "fair_use",
        "spending_limit",
    ]
