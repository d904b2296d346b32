"""The admin for account managers: staff in the account managers' group, not superusers."""

import json
import re

import pytest
from django.contrib.auth.models import Group, User
from django.contrib.gis.geos import MultiPolygon
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from marketplace.models import LicensedRegion, Report, Tenant
from marketplace.staff import ACCOUNT_MANAGERS
from tests import grid
from tests.errors import assert_error
from tests.factories import footfall_product, order_body

ORDER = order_body()


@pytest.fixture
def account_manager(db, client):
    user = User.objects.create_user("anna", password="not-used", is_staff=True)
    user.groups.add(Group.objects.get(name=ACCOUNT_MANAGERS))
    client.force_login(user)
    return client


@pytest.fixture
def failed_report(tenant, city, api):
    """An order whose computation failed (its task never ran here)."""
    report = Report.objects.get(pk=api.post("/api/v1/reports/", ORDER, format="json").json()["id"])
    Report.objects.filter(pk=report.pk).update(status=Report.Status.FAILED, error="the worker lost its database")
    return report


def test_an_account_manager_sees_a_tenant_at_a_glance(account_manager, tenant, failed_report):
    page = account_manager.get(f"/admin/marketplace/tenant/{tenant.pk}/change/")

    assert page.status_code == 200
    text = page.content.decode()
    assert "footfall: 1 failed" in text and "Test country" in text


def test_an_account_manager_reruns_a_failed_report(account_manager, failed_report, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = account_manager.post(
            "/admin/marketplace/report/", {"action": "rerun_failed", "_selected_action": [str(failed_report.pk)]}
        )

    assert response.status_code == 302
    failed_report.refresh_from_db()
    assert failed_report.status == Report.Status.SUCCEEDED


def test_an_account_manager_cannot_touch_the_release_log_or_staff_groups(account_manager):
    assert account_manager.get("/admin/marketplace/release/").status_code == 200
    assert account_manager.get("/admin/marketplace/release/add/").status_code == 403
    assert account_manager.get("/admin/auth/group/").status_code == 403  # not a superuser


def test_only_staff_get_in(db, client):
    client.force_login(User.objects.create_user("buyer", password="not-used"))

    response = client.get("/admin/")

    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_an_account_manager_onboards_a_municipality_in_the_admin(account_manager, city):
    inside, outside = grid.square(0, 0, 2, 4), grid.square(2, 0, 2, 4)
    region = account_manager.post(
        "/admin/marketplace/licensedregion/add/",
        {"name": "Westend", "geometry": MultiPolygon(inside, srid=4326).ewkt},
    )
    assert region.status_code == 302, region.content.decode()[:2000]
    empty_inlines = {
        f"{prefix}-{field}": 0 for prefix in ("memberships", "api_keys") for field in ("TOTAL_FORMS", "INITIAL_FORMS")
    }

    added = account_manager.post(
        "/admin/marketplace/tenant/add/",
        {
            "name": "Stadt Westend",
            "kind": "municipality",
            "time_zone": "Europe/Berlin",
            "products": [footfall_product().pk],
            "licensed_regions": [LicensedRegion.objects.get(name="Westend").pk],
            **empty_inlines,
        },
    )
    assert added.status_code == 302, added.content.decode()[:3000]
    tenant = Tenant.objects.get(name="Stadt Westend")
    keyed = account_manager.post(
        "/admin/marketplace/tenant/", {"action": "create_owner_key", "_selected_action": [tenant.pk]}, follow=True
    )
    raw_key = re.search(r"owner key (ff_\S+)", keyed.content.decode()).group(1)
    city_hall = APIClient()
    city_hall.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw_key}")

    ordered = city_hall.post("/api/v1/reports/", {**ORDER, "geometry": grid.geojson(inside)}, format="json")
    refused = city_hall.post("/api/v1/reports/", {**ORDER, "geometry": grid.geojson(outside)}, format="json")

    assert ordered.status_code == 201, ordered.content
    assert_error(refused, 403, "outside_licensed_region")


def test_an_account_manager_cannot_raise_their_own_rights_or_touch_staff_accounts(account_manager):
    anna = User.objects.get(username="anna")
    root = User.objects.create_superuser("root", password="secret-enough-for-tests")

    account_manager.post(
        f"/admin/auth/user/{anna.pk}/change/",
        {"username": "anna", "is_superuser": "on", "is_staff": "on", "date_joined_0": "2026-01-01"},
    )
    password = account_manager.post(
        f"/admin/auth/user/{root.pk}/password/", {"password1": "taken-over-1234", "password2": "taken-over-1234"}
    )

    anna.refresh_from_db()
    root.refresh_from_db()
    assert not anna.is_superuser
    assert password.status_code in (302, 404) and root.check_password("secret-enough-for-tests")
    assert account_manager.get(f"/admin/auth/user/{root.pk}/change/").status_code in (302, 404)


def test_a_licensed_region_comes_from_a_geojson_file_and_is_drawn(account_manager, city):
    feature = {"type": "Feature", "properties": {}, "geometry": grid.geojson(grid.square(0, 0, 2, 4))}
    upload = SimpleUploadedFile(
        "westend.geojson", json.dumps({"type": "FeatureCollection", "features": [feature]}).encode()
    )

    added = account_manager.post("/admin/marketplace/licensedregion/add/", {"name": "Westend", "boundary_file": upload})

    assert added.status_code == 302, added.content.decode()[:2000]
    region = LicensedRegion.objects.get(name="Westend")
    assert region.geometry.geom_type == "MultiPolygon"
    page = account_manager.get(f"/admin/marketplace/licensedregion/{region.pk}/change/").content.decode()
    assert 'aria-label="boundary"' in page and "0.50 km²" in page  # drawn without map tiles; 2 x 4 cells


@pytest.mark.parametrize(
    ("boundary", "why"),
    [("", "give the boundary"), ("POINT(13.4 52.5)", "Polygon or MultiPolygon"), ("{not json", "no readable")],
)
def test_a_licensed_region_without_a_usable_boundary_is_refused(account_manager, boundary, why):
    refused = account_manager.post("/admin/marketplace/licensedregion/add/", {"name": "Nowhere", "geometry": boundary})

    assert refused.status_code == 200 and why in refused.content.decode()
    assert not LicensedRegion.objects.exists()


def test_a_reports_area_is_shown_not_editable(account_manager, failed_report):
    page = account_manager.get(f"/admin/marketplace/report/{failed_report.pk}/change/").content.decode()

    assert 'aria-label="boundary"' in page and 'name="geometry"' not in page


def test_a_products_admin_shows_its_order_policy_only(account_manager):
    page = account_manager.get(f"/admin/marketplace/product/{footfall_product().pk}/change/")  # view only

    assert page.status_code == 200
    fields = set(re.findall(r"field-(privacy_[a-z0-9_]+)", page.content.decode()))
    # The numbers' privacy is the release's, the same for every product: no k, rounding or noise here.
    assert fields == {"privacy_min_area_km2", "privacy_min_cells", "privacy_query_budget"}
