"""API keys: how a request authenticates, what is stored, and the product catalogue per tenant."""

import datetime as dt
import hashlib

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from marketplace import services
from marketplace.models import ApiKey, Area, Role
from tests.errors import assert_error
from tests.factories import TenantFactory, footfall_product

PRODUCTS = "/api/v1/products/"
AREAS = "/api/v1/areas/"


def client_with(authorization: str | None) -> APIClient:
    client = APIClient()
    if authorization is not None:
        client.credentials(HTTP_AUTHORIZATION=authorization)
    return client


@pytest.fixture
def key(tenant) -> tuple[ApiKey, str]:
    return services.api_key_create(tenant=tenant, name="test key", role=Role.ANALYST)


def last_used_values() -> list:
    return sorted(ApiKey.objects.values_list("pk", "last_used_at"))


# --- refused credentials -------------------------------------------------------------------


def test_no_authorization_header_is_401_with_a_challenge(tenant):
    response = client_with(None).get(PRODUCTS)

    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == "Api-Key"


@pytest.mark.parametrize("path", [AREAS, "/api/v1/reports/"])
def test_no_authorization_header_on_tenant_data_is_401(tenant, path):
    response = client_with(None).get(path)

    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == "Api-Key"


def test_no_authorization_header_cannot_create_an_area(tenant):
    areas_before = Area.objects.count()

    response = client_with(None).post(AREAS, {"name": "x"}, format="json")

    assert_error(response, 401, "not_authenticated")
    assert Area.objects.count() == areas_before


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer x",
        "Api-Key",
        "Api-Key ",
        "Api-Key two words",
        "Api-Key nonsense",
        "Api-Key ff_deadbeef_xxx",
        "Api-Key ff__",
    ],
)
def test_bad_credentials_are_401(key, authorization):
    used_before = last_used_values()

    response = client_with(authorization).get(PRODUCTS)

    assert_error(response, 401, "authentication_failed")
    assert response["WWW-Authenticate"] == "Api-Key"
    assert last_used_values() == used_before


def test_a_known_prefix_with_a_wrong_secret_is_401(key):
    api_key, raw_key = key
    forged = f"ff_{api_key.prefix}_{'A' * 43}"
    assert forged != raw_key

    response = client_with(f"Api-Key {forged}").get(PRODUCTS)

    assert_error(response, 401, "authentication_failed")
    api_key.refresh_from_db()
    assert api_key.last_used_at is None


def test_a_revoked_key_is_401(key):
    api_key, raw_key = key
    services.api_key_revoke(api_key=api_key)

    response = client_with(f"Api-Key {raw_key}").get(PRODUCTS)

    assert_error(response, 401, "authentication_failed")
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None
    assert api_key.last_used_at is None


def test_a_revoked_key_cannot_create_an_area(key):
    api_key, raw_key = key
    services.api_key_revoke(api_key=api_key)
    areas_before = Area.objects.count()

    response = client_with(f"Api-Key {raw_key}").post(AREAS, {"name": "x"}, format="json")

    assert_error(response, 401, "authentication_failed")
    assert Area.objects.count() == areas_before


# --- a valid key -----------------------------------------------------------------------------


def test_a_valid_key_authenticates(key):
    _, raw_key = key

    response = client_with(f"Api-Key {raw_key}").get(PRODUCTS)

    assert response.status_code == 200


def test_a_valid_key_records_when_it_was_last_used_at_most_once_a_minute(key):
    api_key, raw_key = key
    assert api_key.last_used_at is None
    client = client_with(f"Api-Key {raw_key}")

    before = timezone.now()
    assert client.get(PRODUCTS).status_code == 200
    api_key.refresh_from_db()
    first_use = api_key.last_used_at
    assert first_use is not None
    assert before <= first_use <= timezone.now()

    # a second request within the minute does not write again
    assert client.get(PRODUCTS).status_code == 200
    api_key.refresh_from_db()
    assert api_key.last_used_at == first_use


def test_last_used_is_refreshed_after_a_minute(key):
    api_key, raw_key = key
    long_ago = timezone.now() - dt.timedelta(minutes=2)
    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=long_ago)

    assert client_with(f"Api-Key {raw_key}").get(PRODUCTS).status_code == 200

    api_key.refresh_from_db()
    assert api_key.last_used_at > long_ago + dt.timedelta(minutes=1)


def test_only_the_sha256_of_the_key_is_stored(key):
    api_key, raw_key = key
    api_key.refresh_from_db()

    assert api_key.hashed_key == hashlib.sha256(raw_key.encode()).hexdigest()
    stored = [str(value) for value in ApiKey.objects.filter(pk=api_key.pk).values().get().values()]
    assert all(raw_key not in value for value in stored)
    secret = raw_key.split("_", 2)[2]
    assert all(secret not in value for value in stored)


# --- products ------------------------------------------------------------------------------


def test_products_show_footfall_granted_for_a_granted_tenant(api):
    response = api.get(PRODUCTS)

    assert response.status_code == 200
    footfall = [product for product in response.json() if product["code"] == "footfall"]
    assert footfall == [
        {
            "code": "footfall",
            "name": "Footfall",
            "description": footfall_product().description,
            "breakdowns": ["age_band", "gender"],
            "granted": True,
        }
    ]


def test_products_show_footfall_not_granted_for_a_tenant_without_the_grant(db, client_for):
    footfall_product()
    ungranted = TenantFactory()

    response = client_for(ungranted).get(PRODUCTS)

    assert response.status_code == 200
    assert {product["code"]: product["granted"] for product in response.json()}["footfall"] is False


def test_inactive_products_are_not_listed(api):
    product = footfall_product()
    product.is_active = False
    product.save()

    response = api.get(PRODUCTS)

    assert response.status_code == 200
    assert "footfall" not in [listed["code"] for listed in response.json()]
    assert response.json()  # the rest of the catalog is still there
