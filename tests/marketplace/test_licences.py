"""Entitlements: a tenant orders only products it was granted, inside regions it is licensed for."""

import datetime as dt
import io
import json

import pytest
from django.contrib.gis.geos import GEOSGeometry, MultiPolygon
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from marketplace.models import AuditEvent, Report
from marketplace.services import licensed_region_create, product_grant, region_license
from tests import grid
from tests.errors import assert_error
from tests.factories import TenantFactory, footfall_product, order_body, raw_api_key

ORDER = order_body()


@pytest.fixture
def city_tenant(db):
    """A municipality licensed for the western half of the test block only."""
    tenant = TenantFactory(kind="municipality")
    product_grant(tenant=tenant, product=footfall_product())
    return tenant


def licensed(tenant, polygon, **period):
    region = licensed_region_create(name="West", geometry=MultiPolygon(polygon, srid=4326), **period)
    region_license(tenant=tenant, region=region)
    return region


def caller(tenant) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw_api_key(tenant)}")
    return client


def test_an_order_inside_the_licensed_region_is_taken(city_tenant, city):
    licensed(city_tenant, grid.square(0, 0, 4, 4))

    assert caller(city_tenant).post("/api/v1/reports/", ORDER, format="json").status_code == 201


def test_an_order_reaching_outside_the_licensed_region_is_refused(city_tenant, city):
    licensed(city_tenant, grid.square(0, 0, 2, 4))

    response = caller(city_tenant).post("/api/v1/reports/", ORDER, format="json")

    assert_error(response, 403, "outside_licensed_region")
    assert "0.500 km²" in response.json()["message"]
    assert Report.objects.count() == 0


def test_without_a_licence_nothing_can_be_ordered(city_tenant, city):
    assert_error(caller(city_tenant).post("/api/v1/reports/", ORDER, format="json"), 403, "no_licensed_region")


@pytest.mark.parametrize(
    "period",
    [
        {"valid_until": timezone.now() - dt.timedelta(days=1)},
        {"valid_from": timezone.now() + dt.timedelta(days=1)},
    ],
    ids=["expired", "not yet valid"],
)
def test_a_licence_counts_only_in_its_validity_period(city_tenant, city, period):
    licensed(city_tenant, grid.square(0, 0, 4, 4), **period)

    assert_error(caller(city_tenant).post("/api/v1/reports/", ORDER, format="json"), 403, "no_licensed_region")
    assert Report.objects.count() == 0


def test_an_account_manager_licenses_a_region_from_a_file(city_tenant, city, tmp_path):
    path = tmp_path / "west.geojson"
    path.write_text(
        json.dumps({"type": "Feature", "properties": {}, "geometry": grid.geojson(grid.square(0, 0, 4, 4))})
    )

    call_command("license_region", city_tenant.name, str(path), name="Westend", stdout=io.StringIO())

    assert caller(city_tenant).post("/api/v1/reports/", ORDER, format="json").status_code == 201
    assert AuditEvent.objects.filter(tenant=city_tenant, action="region.licensed", target="Westend").exists()


@pytest.mark.parametrize(
    "period",
    [
        {"valid_until": timezone.now() - dt.timedelta(days=1)},
        {"valid_from": timezone.now() + dt.timedelta(days=1)},
    ],
    ids=["expired", "not yet valid"],
)
def test_a_product_grant_counts_only_in_its_validity_period(city_tenant, city, period):
    licensed(city_tenant, grid.square(0, 0, 4, 4))
    product_grant(tenant=city_tenant, product=footfall_product(), **period)

    assert_error(caller(city_tenant).post("/api/v1/reports/", ORDER, format="json"), 403, "product_grant_not_valid")
    assert Report.objects.count() == 0


def test_a_product_grant_with_a_current_period_is_honoured(city_tenant, city):
    licensed(city_tenant, grid.square(0, 0, 4, 4))
    until = (timezone.now() + dt.timedelta(days=30)).isoformat()
    call_command("grant_product", city_tenant.name, "footfall", "--valid-until", until, stdout=io.StringIO())

    assert caller(city_tenant).post("/api/v1/reports/", ORDER, format="json").status_code == 201


def test_a_tenant_sees_the_regions_it_may_order_in_to_draw_them_on_a_map(city_tenant, db):
    now = timezone.now()
    west = licensed(city_tenant, grid.square(0, 0, 2, 4))
    licensed(city_tenant, grid.square(2, 0, 2, 4), valid_until=now - dt.timedelta(days=1))  # ended
    later = licensed_region_create(
        name="Later", geometry=MultiPolygon(grid.square(0, 4, 4, 4), srid=4326), valid_from=now + dt.timedelta(days=30)
    )
    region_license(tenant=city_tenant, region=later)
    other_tenant = TenantFactory()
    licensed(other_tenant, grid.square(40, 40, 4, 4))

    response = caller(city_tenant).get("/api/v1/licensed-regions/")

    assert response.status_code == 200
    regions = response.json()
    assert [region["name"] for region in regions] == ["Later", "West"]
    drawn = regions[1]
    assert drawn["valid_from"] is None and drawn["valid_until"] is None
    assert drawn["geometry"]["type"] == "MultiPolygon"
    # A rectangle has nothing to simplify: the outline is the boundary.
    assert GEOSGeometry(json.dumps(drawn["geometry"]), srid=4326).equals_exact(west.geometry, tolerance=1e-9)
