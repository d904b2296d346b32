"""The admin cannot be turned against customers: revocation is final, a member's keys follow their
role on every path, staff are never members, every change is logged with the staff user, secrets
are shown once and never in cookies, and guessing passwords or keys is limited."""

import uuid

import pytest
from django.contrib.auth.models import Group, User
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from rest_framework.test import APIClient

from marketplace import selectors, services
from marketplace.exceptions import NotPermitted
from marketplace.models import ApiKey, AuditEvent, LicensedRegion, Membership, Role, Tenant
from marketplace.staff import ACCOUNT_MANAGERS
from tests import factories
from tests.errors import assert_error

PRODUCTS = "/api/v1/products/"


@pytest.fixture
def anna(db) -> User:
    user = User.objects.create_user("anna", password="anna-signs-in-2026", is_staff=True)
    user.groups.add(Group.objects.get(name=ACCOUNT_MANAGERS))
    return user


@pytest.fixture
def account_manager(anna, client):
    client.force_login(anna)
    return client


def api_client(raw_key: str, ip: str = "127.0.0.1") -> APIClient:
    client = APIClient(REMOTE_ADDR=ip)
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw_key}")
    return client


def member(tenant: Tenant, email: str, role: str) -> Membership:
    user = User.objects.create_user(username=email, email=email)
    return Membership.objects.create(user=user, tenant=tenant, role=role)


def member_key(tenant: Tenant, email: str, role: str) -> tuple[ApiKey, str]:
    return services.api_key_create(tenant=tenant, name=f"{email} {role}", role=role, member=email)


def tenant_form(tenant: Tenant, *, memberships=(), keys=(), **changes) -> dict:
    """The tenant's change form as the admin posts it; memberships and keys: dicts of inline fields."""
    data = {
        "name": tenant.name,
        "kind": tenant.kind,
        "time_zone": tenant.time_zone,
        "monthly_spending_limit_cents": tenant.monthly_spending_limit_cents or "",
        "products": [product.pk for product in selectors.product_granted_list(tenant=tenant)],
        "licensed_regions": [region.pk for region in selectors.licensed_region_list(tenant=tenant, at=None)],
    }
    for prefix, rows in (("memberships", memberships), ("api_keys", keys)):
        rows = list(rows)
        data[f"{prefix}-TOTAL_FORMS"] = len(rows)
        data[f"{prefix}-INITIAL_FORMS"] = sum(1 for row in rows if row.get("id"))
        for index, row in enumerate(rows):
            data.update({f"{prefix}-{index}-{field}": value for field, value in row.items()})
    data.update(changes)
    return data


def membership_row(membership: Membership, **changes) -> dict:
    return {"id": membership.pk, "user": membership.user_id, "role": membership.role, **changes}


def key_row(api_key: ApiKey, **changes) -> dict:
    return {"id": api_key.pk, "name": api_key.name, "expires_at_0": "", "expires_at_1": "", **changes}


def post_tenant(account_manager, tenant: Tenant, **form):
    response = account_manager.post(f"/admin/marketplace/tenant/{tenant.pk}/change/", tenant_form(tenant, **form))
    assert response.status_code == 302, response.content.decode()[:3000]
    return response


# --- revocation is final ----------------------------------------------------------------------


def test_the_database_refuses_to_unrevoke_a_key(tenant):
    api_key, raw_key = services.api_key_create(tenant=tenant, name="gone", role=Role.ANALYST)
    services.api_key_revoke(api_key=api_key)

    for revoked_at in (None, api_key.revoked_at.replace(year=2030)):
        with pytest.raises(IntegrityError, match="revocation is final"), transaction.atomic():
            ApiKey.objects.filter(pk=api_key.pk).update(revoked_at=revoked_at)
    api_key.revoked_at = None
    with pytest.raises(ValidationError, match="revocation is final"):
        api_key.save()

    assert_error(api_client(raw_key).get(PRODUCTS), 401, "authentication_failed")


def test_the_admin_cannot_clear_a_revoked_date_but_revokes_for_good(account_manager, anna, tenant):
    revoked, revoked_raw = services.api_key_create(tenant=tenant, name="revoked", role=Role.OWNER)
    services.api_key_revoke(api_key=revoked)
    active, active_raw = services.api_key_create(tenant=tenant, name="active", role=Role.OWNER)

    # A forged post with an empty revoked date does nothing: the field is read-only.
    post_tenant(
        account_manager,
        tenant,
        keys=[key_row(revoked, revoked_at_0="", revoked_at_1="", name="back again"), key_row(active, revoke="on")],
    )

    revoked.refresh_from_db()
    active.refresh_from_db()
    assert revoked.revoked_at is not None and active.revoked_at is not None
    assert_error(api_client(revoked_raw).get(PRODUCTS), 401, "authentication_failed")
    assert_error(api_client(active_raw).get(PRODUCTS), 401, "authentication_failed")
    logged = AuditEvent.objects.filter(tenant=tenant, staff_user=anna).order_by("action")
    assert list(logged.values_list("action", "target", "details")) == [
        ("api_key.changed", f"{revoked.prefix} back again", {"name": ["revoked", "back again"]}),
        ("api_key.revoked", f"{active.prefix} active", {"reason": "revoked in the admin"}),
    ]
    page = account_manager.get(f"/admin/marketplace/tenant/{tenant.pk}/change/").content.decode()
    assert 'name="api_keys-0-revoked_at' not in page and 'name="api_keys-0-revoke"' in page


# --- a member's keys follow their role, whatever the path ---------------------------------------


def test_demoting_an_owner_in_the_admin_revokes_their_owner_keys(account_manager, anna, tenant):
    boss = member(tenant, "boss@example.org", Role.OWNER)
    owner_key, owner_raw = member_key(tenant, "boss@example.org", Role.OWNER)
    viewer_key, viewer_raw = member_key(tenant, "boss@example.org", Role.VIEWER)

    post_tenant(account_manager, tenant, memberships=[membership_row(boss, role=Role.ANALYST)])

    assert_error(api_client(owner_raw).get(PRODUCTS), 401, "authentication_failed")
    assert api_client(viewer_raw).get(PRODUCTS).status_code == 200
    logged = AuditEvent.objects.filter(tenant=tenant, staff_user=anna).order_by("action")
    assert list(logged.values_list("action", "details")) == [
        ("api_key.revoked", {"reason": "analyst now"}),
        ("member.role_changed", {"before": "owner", "after": "analyst"}),
    ]


def test_removing_a_member_in_the_admin_revokes_all_their_keys(account_manager, anna, tenant):
    boss = member(tenant, "boss@example.org", Role.OWNER)
    _, owner_raw = member_key(tenant, "boss@example.org", Role.OWNER)
    _, viewer_raw = member_key(tenant, "boss@example.org", Role.VIEWER)

    post_tenant(account_manager, tenant, memberships=[membership_row(boss, DELETE="on")])

    assert not Membership.objects.exists()
    for raw_key in (owner_raw, viewer_raw):
        assert_error(api_client(raw_key).get(PRODUCTS), 401, "authentication_failed")
    assert AuditEvent.objects.filter(tenant=tenant, staff_user=anna, action="member.removed").exists()
    assert AuditEvent.objects.filter(tenant=tenant, staff_user=anna, action="api_key.revoked").count() == 2


def test_adding_a_member_in_the_admin_is_logged(account_manager, anna, tenant):
    person = User.objects.create_user("ada@example.org", email="ada@example.org")

    post_tenant(account_manager, tenant, memberships=[{"user": person.pk, "role": Role.ANALYST}])

    assert Membership.objects.get().user == person
    event = AuditEvent.objects.get(action="member.added")
    assert (event.staff_user, event.target, event.details) == (anna, "ada@example.org", {"role": "analyst"})


def test_bulk_updates_and_deletes_revoke_keys_in_the_database(tenant):
    member(tenant, "boss@example.org", Role.OWNER)
    member(tenant, "ada@example.org", Role.ANALYST)
    _, boss_owner = member_key(tenant, "boss@example.org", Role.OWNER)
    _, boss_viewer = member_key(tenant, "boss@example.org", Role.VIEWER)
    _, ada_analyst = member_key(tenant, "ada@example.org", Role.ANALYST)

    Membership.objects.filter(user__username="boss@example.org").update(role=Role.VIEWER)  # no service, no signal
    Membership.objects.filter(user__username="ada@example.org").delete()  # as the admin's bulk delete does

    assert_error(api_client(boss_owner).get(PRODUCTS), 401, "authentication_failed")
    assert_error(api_client(ada_analyst).get(PRODUCTS), 401, "authentication_failed")
    assert api_client(boss_viewer).get(PRODUCTS).status_code == 200
    reasons = AuditEvent.objects.filter(action="api_key.revoked").values_list("details", flat=True)
    assert sorted(details["reason"] for details in reasons) == ["member removed", "viewer now"]
    assert all(details["by"] == "database" for details in reasons)


# --- staff accounts are never members -----------------------------------------------------------


def test_a_staff_account_cannot_be_a_member(account_manager, anna, tenant):
    principal = services.staff_principal(tenant=tenant, staff_user=anna)
    with pytest.raises(NotPermitted, match="staff account"):
        services.membership_create(principal=principal, user=anna, role=Role.OWNER)
    with pytest.raises(IntegrityError, match="staff account"), transaction.atomic():
        Membership.objects.create(user=anna, tenant=tenant, role=Role.OWNER)

    refused = account_manager.post(
        f"/admin/marketplace/tenant/{tenant.pk}/change/",
        tenant_form(tenant, memberships=[{"user": anna.pk, "role": Role.OWNER}]),
    )

    assert refused.status_code == 200 and "Select a valid choice" in refused.content.decode()
    assert not Membership.objects.exists()


def test_a_member_cannot_be_made_staff(db, tenant):
    boss = member(tenant, "boss@example.org", Role.OWNER).user
    boss.is_staff = True

    with pytest.raises(IntegrityError, match="cannot be a staff account"), transaction.atomic():
        boss.save()


def test_the_api_cannot_add_a_staff_account_as_a_member(anna, tenant, client_for):
    anna.email = "anna@example.org"
    anna.username = "anna@example.org"
    anna.save()

    refused = client_for(tenant, Role.OWNER).post(
        "/api/v1/members/", {"email": "anna@example.org", "role": "owner"}, format="json"
    )

    assert_error(refused, 403, "staff_account")


# --- keys made in the admin -----------------------------------------------------------------------


def test_an_admin_key_is_shown_once_on_a_page_not_in_a_cookie_and_attributed(account_manager, anna, tenant):
    response = account_manager.post(
        "/admin/marketplace/tenant/", {"action": "create_owner_key", "_selected_action": [tenant.pk]}
    )

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    api_key = ApiKey.objects.get(tenant=tenant, name="owner key (admin)")
    page = response.content.decode()
    raw_key = page.split("owner key ")[-1].split()[0]
    assert raw_key.startswith(f"ff_{api_key.prefix}_")
    assert all(raw_key not in morsel.value for morsel in response.cookies.values())
    assert "messages" not in response.cookies
    assert api_key.created_by == anna
    event = AuditEvent.objects.get(action="api_key.created")
    assert (event.staff_user, event.actor) == (anna, None)
    assert api_client(raw_key).get(PRODUCTS).status_code == 200
    assert raw_key not in account_manager.get("/admin/marketplace/tenant/").content.decode()  # once


# --- grants, licences and limits are logged with the staff user -----------------------------------


def test_grants_licences_and_limits_changed_in_the_admin_are_logged(account_manager, anna, tenant):
    post_tenant(account_manager, tenant, products=[], licensed_regions=[], monthly_spending_limit_cents=50000)

    tenant.refresh_from_db()
    assert tenant.monthly_spending_limit_cents == 50000
    logged = AuditEvent.objects.filter(tenant=tenant, staff_user=anna).order_by("action")
    assert list(logged.values_list("action", "target", "details")) == [
        ("product.revoked", factories.footfall_product().code, {}),
        ("region.unlicensed", factories.test_region().name, {}),
        ("spending_limit.changed", tenant.name, {"before": None, "after": 50000}),
    ]


def test_a_licensed_regions_change_is_logged_for_its_tenants(account_manager, anna, tenant):
    region = factories.test_region()

    changed = account_manager.post(
        f"/admin/marketplace/licensedregion/{region.pk}/change/",
        {
            "name": region.name,
            "geometry": region.geometry.ewkt,
            "valid_until_0": "2030-01-01",
            "valid_until_1": "00:00",
        },
    )

    assert changed.status_code == 302, changed.content.decode()[:2000]
    assert LicensedRegion.objects.get(pk=region.pk).valid_until.year == 2030
    event = AuditEvent.objects.get(action="region.changed")
    assert (event.tenant, event.staff_user, event.details) == (tenant, anna, {"fields": ["valid_until"]})


# --- brute force ------------------------------------------------------------------------------------


def test_the_admin_sign_in_locks_a_username_and_address_out_after_failures(anna, client, settings):
    settings.AXES_FAILURE_LIMIT = 3

    def sign_in(password: str, username: str = "anna", ip: str = "10.1.1.1"):
        return client.post("/admin/login/", {"username": username, "password": password}, REMOTE_ADDR=ip)

    for _ in range(2):
        assert sign_in("wrong").status_code == 200  # the form again, with an error

    assert sign_in("wrong").status_code == 429  # the third failure locks the pair out
    assert sign_in("anna-signs-in-2026").status_code == 429  # locked out, even with the password
    assert sign_in("anna-signs-in-2026", ip="10.1.1.2").status_code == 302  # another address
    assert sign_in("wrong", username="someone-else").status_code == 200  # another username


@pytest.fixture
def key_failures(settings):
    settings.API_KEY_FAILURES_PER_IP = 3
    ip = f"10.9.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"
    cache.delete(f"api-key-failures:{ip}")
    yield ip
    cache.delete(f"api-key-failures:{ip}")


def test_bad_api_keys_from_an_address_are_answered_429_after_the_limit(tenant, key_failures, settings):
    _, raw_key = services.api_key_create(tenant=tenant, name="good", role=Role.ANALYST)

    for bad in ("ff_00000000_guess", "ff_nope", f"{raw_key}x"):
        assert_error(api_client(bad, ip=key_failures).get(PRODUCTS), 401, "authentication_failed")
    refused = api_client("ff_11111111_guess", ip=key_failures).get(PRODUCTS)

    assert_error(refused, 429, "too_many_bad_api_keys")
    assert 0 < int(refused["Retry-After"]) <= settings.API_KEY_FAILURE_WINDOW_SECONDS
    assert api_client(raw_key, ip=key_failures).get(PRODUCTS).status_code == 200  # a valid key is let in
    assert api_client(raw_key, ip="10.8.8.8").get(PRODUCTS).status_code == 200


def test_a_failing_cache_does_not_stop_authentication(tenant, key_failures, monkeypatch, caplog):
    _, raw_key = services.api_key_create(tenant=tenant, name="good", role=Role.ANALYST)

    class CacheDown:
        def __getattr__(self, name):
            def down(*args, **kwargs):
                raise ConnectionError("the cache is down")

            return down

    monkeypatch.setattr("marketplace.authentication.cache", CacheDown())  # the request limit has its own tests

    assert api_client(raw_key, ip=key_failures).get(PRODUCTS).status_code == 200
    assert_error(api_client("ff_00000000_guess", ip=key_failures).get(PRODUCTS), 401, "authentication_failed")
    assert "the cache failed" in caplog.text
