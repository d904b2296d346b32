"""API keys over the API: owners create (the secret shown once), list, rotate and revoke them."""

import datetime as dt

from django.utils import timezone
from rest_framework.test import APIClient

from marketplace.models import ApiKey, AuditEvent, Role
from tests.errors import assert_error

KEYS = "/api/v1/api-keys/"


def as_client(raw_key: str) -> APIClient:
    caller = APIClient()
    caller.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw_key}")
    return caller


def test_an_owner_creates_a_key_whose_secret_is_shown_once(tenant, client_for):
    owner = client_for(tenant, Role.OWNER)

    created = owner.post(KEYS, {"name": "dashboard", "role": "viewer"}, format="json")

    assert created.status_code == 201
    key = created.json()
    assert key["key"].startswith(f"ff_{key['prefix']}_") and key["role"] == "viewer"
    stored = ApiKey.objects.get(prefix=key["prefix"])
    assert key["key"] not in stored.hashed_key
    listed = owner.get(KEYS).json()["results"]
    assert key["prefix"] in {item["prefix"] for item in listed}
    assert all("key" not in item for item in listed)
    assert as_client(key["key"]).get("/api/v1/products/").status_code == 200
    assert AuditEvent.objects.filter(tenant=tenant, action="api_key.created", details__role="viewer").exists()


def test_a_rotated_key_stops_working_and_its_successor_works(tenant, client_for):
    owner = client_for(tenant, Role.OWNER)
    old = owner.post(KEYS, {"name": "etl", "role": "analyst"}, format="json").json()

    rotated = owner.post(f"{KEYS}{old['id']}/rotate/")

    assert rotated.status_code == 201
    new = rotated.json()
    assert (new["name"], new["role"]) == ("etl", "analyst") and new["prefix"] != old["prefix"]
    assert_error(as_client(old["key"]).get("/api/v1/products/"), 401, "authentication_failed")
    assert as_client(new["key"]).get("/api/v1/products/").status_code == 200


def test_a_revoked_key_is_refused_and_stays_listed(tenant, client_for):
    owner = client_for(tenant, Role.OWNER)
    key = owner.post(KEYS, {"name": "old", "role": "analyst"}, format="json").json()

    revoked = owner.post(f"{KEYS}{key['id']}/revoke/")

    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert_error(as_client(key["key"]).get("/api/v1/products/"), 401, "authentication_failed")
    assert_error(owner.post(f"{KEYS}{key['id']}/rotate/"), 409, "api_key_revoked")


def test_an_expired_key_is_refused(tenant, client_for):
    owner = client_for(tenant, Role.OWNER)
    soon = timezone.now() + dt.timedelta(hours=1)
    key = owner.post(KEYS, {"name": "temp", "role": "analyst", "expires_at": soon.isoformat()}, format="json").json()
    assert as_client(key["key"]).get("/api/v1/products/").status_code == 200

    ApiKey.objects.filter(prefix=key["prefix"]).update(expires_at=timezone.now() - dt.timedelta(seconds=1))

    assert_error(as_client(key["key"]).get("/api/v1/products/"), 401, "authentication_failed")


def test_a_key_cannot_expire_in_the_past(tenant, client_for):
    past = (timezone.now() - dt.timedelta(days=1)).isoformat()
    owner = client_for(tenant, Role.OWNER)
    keys_before = ApiKey.objects.count()

    response = owner.post(KEYS, {"name": "x", "role": "analyst", "expires_at": past}, format="json")

    assert_error(response, 400, "expiry_in_past", attr="expires_at")
    assert ApiKey.objects.count() == keys_before
