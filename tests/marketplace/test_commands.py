"""Operator commands: create_tenant, grant_product, create_api_key, create_account_manager."""

import io

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import CommandError
from django.http import HttpRequest
from guardian.models import GroupObjectPermission
from rest_framework.test import APIClient

from marketplace import selectors
from marketplace.models import ApiKey, Role, Tenant
from tests.factories import TenantFactory, footfall_product


def run(*args, **options) -> tuple[str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    call_command(*args, stdout=stdout, stderr=stderr, **options)
    return stdout.getvalue(), stderr.getvalue()


def counts() -> tuple[int, int, int, int]:
    return Tenant.objects.count(), Group.objects.count(), GroupObjectPermission.objects.count(), ApiKey.objects.count()


# --- create_tenant ------------------------------------------------------------------------


def test_create_tenant(db):
    tenants_before, groups_before, _, _ = counts()

    stdout, _ = run("create_tenant", "Acme", kind="retail")

    tenant = Tenant.objects.get(name="Acme")
    assert (tenant.kind, tenant.time_zone) == (Tenant.Kind.RETAIL, "Europe/Berlin")
    assert (Tenant.objects.count(), Group.objects.count()) == (tenants_before + 1, groups_before + 1)
    assert "created tenant 'Acme'" in stdout


def test_create_tenant_with_a_time_zone(db):
    run("create_tenant", "Stadt Wien", kind="municipality", time_zone="Europe/Vienna")

    tenant = Tenant.objects.get(name="Stadt Wien")
    assert (tenant.kind, tenant.time_zone) == (Tenant.Kind.MUNICIPALITY, "Europe/Vienna")


def test_create_tenant_refuses_a_duplicate_name(db):
    run("create_tenant", "Acme", kind="retail")
    before = counts()

    with pytest.raises(CommandError, match="exists already"):
        run("create_tenant", "Acme", kind="other")

    assert counts() == before
    assert Tenant.objects.get(name="Acme").kind == Tenant.Kind.RETAIL


def test_create_tenant_refuses_an_unknown_kind(db):
    before = counts()

    with pytest.raises(CommandError, match="invalid choice"):
        run("create_tenant", "Acme", kind="bakery")

    assert counts() == before


def test_create_tenant_refuses_an_unknown_time_zone_and_leaves_no_group(db):
    before = counts()

    with pytest.raises(CommandError, match="unknown time zone"):
        run("create_tenant", "Acme", kind="retail", time_zone="Mars/Olympus")

    assert counts() == before


def test_create_tenant_accepts_the_longest_name_the_model_allows(db):
    # Tenant.name allows 200 characters; the tenant's group is named after it
    name = "A" * Tenant._meta.get_field("name").max_length

    run("create_tenant", name, kind="retail")

    assert Tenant.objects.filter(name=name).count() == 1


# --- grant_product ---------------------------------------------------------------------------


def test_grant_product(db):
    footfall = footfall_product()
    tenant = TenantFactory(name="Acme")
    assert list(selectors.product_granted_list(tenant=tenant)) == []

    stdout, _ = run("grant_product", "Acme", "footfall")

    assert list(selectors.product_granted_list(tenant=tenant)) == [footfall]
    assert "Acme may now order footfall" in stdout


def test_grant_product_twice_is_harmless(db):
    footfall = footfall_product()
    tenant = TenantFactory(name="Acme")
    run("grant_product", "Acme", "footfall")
    before = counts()

    run("grant_product", "Acme", "footfall")

    assert counts() == before
    assert list(selectors.product_granted_list(tenant=tenant)) == [footfall]


@pytest.mark.parametrize(
    ("tenant_name", "product_code", "message"),
    [("Nobody", "footfall", "no tenant named 'Nobody'"), ("Acme", "weather", "no product 'weather'")],
)
def test_grant_product_refuses_unknown_names(db, tenant_name, product_code, message):
    footfall_product()
    tenant = TenantFactory(name="Acme")
    before = counts()

    with pytest.raises(CommandError, match=message):
        run("grant_product", tenant_name, product_code)

    assert counts() == before
    assert list(selectors.product_granted_list(tenant=tenant)) == []


# --- create_api_key --------------------------------------------------------------------------


def test_create_api_key_prints_a_working_key_once(db):
    footfall_product()
    tenant = TenantFactory(name="Acme")

    stdout, stderr = run("create_api_key", "Acme", role="analyst")

    raw_key = stdout.strip()
    assert raw_key.startswith("ff_")
    assert stdout.count(raw_key) == 1
    assert raw_key not in stderr
    api_key = ApiKey.objects.get()
    assert (api_key.tenant, api_key.role, api_key.revoked_at) == (tenant, Role.ANALYST, None)
    assert api_key.prefix in stderr
    # and the printed key authenticates
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw_key}")
    assert client.get("/api/v1/products/").status_code == 200


def test_create_api_key_with_a_name_and_role(db):
    TenantFactory(name="Acme")

    run("create_api_key", "Acme", role="viewer", name="dashboard")

    assert list(ApiKey.objects.values_list("name", "role")) == [("dashboard", Role.VIEWER)]


def test_create_api_key_refuses_an_unknown_tenant(db):
    TenantFactory(name="Acme")
    before = counts()

    with pytest.raises(CommandError, match="no tenant named 'Nobody'"):
        run("create_api_key", "Nobody", role="analyst")

    assert counts() == before


def test_create_api_key_refuses_an_unknown_role(db):
    TenantFactory(name="Acme")
    before = counts()

    with pytest.raises(CommandError, match="invalid choice"):
        run("create_api_key", "Acme", role="admin")

    assert counts() == before


# --- create_account_manager -----------------------------------------------------------------


def test_create_account_manager_makes_a_staff_member_of_the_group_who_can_sign_in(db, client):
    password, _ = run("create_account_manager", "Anna@Example.org")

    # django-axes (the sign-in limit) needs the request that signs in.
    assert client.login(request=HttpRequest(), username="anna@example.org", password=password.strip())
    assert client.get("/admin/marketplace/tenant/").status_code == 200
    assert client.get("/admin/auth/group/").status_code == 403  # not a superuser


def test_create_account_manager_refuses_an_existing_user(db):
    run("create_account_manager", "anna@example.org")

    with pytest.raises(CommandError, match="exists already"):
        run("create_account_manager", "anna@example.org")
