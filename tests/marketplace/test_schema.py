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
    "/api/v1/licensed-regions/",
    "/api/v1/regions/",
    "/api/v1/quotes/",
    "/api/v1/organisation/",
    "/api/v1/usage/",
    "/api/v1/invoices/",
}

# Generated clients name their functions after these (docs/openapi-python-client.yaml):
# a rename breaks every client, so they change only on purpose.
EXPECTED_OPERATION_IDS = {
    "api_keys_create",
    "api_keys_list",
    "api_keys_retrieve",
    "api_keys_revoke_create",
    "api_keys_rotate_create",
    "areas_create",
    "areas_destroy",
    "areas_list",
    "areas_retrieve",
    "areas_share_create",
    "invoices_list",
    "members_create",
    "members_destroy",
    "members_list",
    "members_partial_update",
    "members_retrieve",
    "organisation_partial_update",
    "organisation_retrieve",
    "products_list",
    "quotes_create",
    "licensed_regions_list",
    "regions_list",
    "reports_cancel_create",
    "reports_create",
    "reports_list",
    "reports_result_csv_retrieve",
    "reports_result_geojson_retrieve",
    "reports_result_json_retrieve",
    "reports_result_parquet_retrieve",
    "reports_result_png_retrieve",
    "reports_retrieve",
    "reports_rows_retrieve",
    "reports_share_create",
    "usage_retrieve",
    "webhooks_create",
    "webhooks_deliveries_list",
    "webhooks_destroy",
    "webhooks_list",
    "webhooks_retrieve",
    "webhooks_test_create",
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


def test_each_operation_has_its_stable_id(schema):
    operation_ids = [operation["operationId"] for path in schema["paths"].values() for operation in path.values()]

    assert sorted(operation_ids) == sorted(EXPECTED_OPERATION_IDS)


def test_a_geometry_is_taken_as_a_polygon_or_multipolygon_and_given_as_a_multipolygon(schema):
    schemas = schema["components"]["schemas"]
    polygon, multi_polygon = schemas["GeoJSONPolygon"], schemas["GeoJSONMultiPolygon"]
    ref = {"Polygon": "#/components/schemas/GeoJSONPolygon", "MultiPolygon": "#/components/schemas/GeoJSONMultiPolygon"}

    for name in ("AreaInputRequest", "ReportInputRequest"):
        assert schemas[name]["properties"]["geometry"]["oneOf"] == [
            {"$ref": ref["Polygon"]},
            {"$ref": ref["MultiPolygon"]},
        ]
        assert schemas[name]["properties"]["geometry"]["discriminator"] == {"propertyName": "type", "mapping": ref}
    assert schemas["AreaOutput"]["properties"]["geometry"] == {"$ref": ref["MultiPolygon"]}
    assert schemas[polygon["properties"]["type"]["$ref"].rsplit("/", 1)[1]]["enum"] == ["Polygon"]
    # position, ring, polygon (, polygons): every array says what it holds, down to the numbers
    assert polygon["properties"]["coordinates"]["items"]["items"]["items"] == {"type": "number"}
    assert multi_polygon["properties"]["coordinates"]["items"]["items"]["items"]["items"] == {"type": "number"}


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
