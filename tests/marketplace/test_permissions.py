"""The permission matrix: every endpoint, tried by every kind of caller. Denied calls change
nothing; another organisation's ids are 404 (broken object-level authorization, OWASP API1)."""

import pytest
from django.contrib.gis.geos import MultiPolygon
from rest_framework.test import APIClient

from billing.models import Quote
from marketplace import services
from marketplace.models import ApiKey, Area, AuditEvent, Membership, Report, Role, Share, Tenant, WebhookEndpoint
from tests import grid
from tests.factories import granted_tenant, order_body

AREA_BODY = {"name": "Block", "geometry": grid.geojson(grid.square(0, 0, 4, 4))}
ORDER_BODY = order_body()
ACTORS = ["anonymous", "other_tenant", Role.OWNER, Role.ANALYST, Role.FINANCE, Role.VIEWER]
READ, CREATE, CHANGE, KEYS_READ, KEYS_CHANGE = "read", "create", "change", "keys_read", "keys_change"
SETTING, FINANCE_READ = "setting", "finance_read"

# (method, path, body, what it is)
ENDPOINTS = [
    ("get", "/api/v1/products/", None, "catalog"),
    ("get", "/api/v1/regions/", None, "catalog"),
    ("get", "/api/v1/areas/", None, "list"),
    ("post", "/api/v1/areas/", AREA_BODY, CREATE),
    ("get", "/api/v1/areas/{area}/", None, READ),
    ("post", "/api/v1/areas/{area}/share/", {"viewer": "{viewer}"}, CHANGE),
    ("delete", "/api/v1/areas/{area}/", None, CHANGE),
    ("get", "/api/v1/reports/", None, "list"),
    ("post", "/api/v1/reports/", ORDER_BODY, CREATE),
    ("get", "/api/v1/reports/{report}/", None, READ),
    ("get", "/api/v1/reports/{report}/rows/", None, READ),
    *[("get", f"/api/v1/reports/{{report}}/result.{fmt}", None, READ) for fmt in ("json", "csv", "parquet", "png")],
    ("get", "/api/v1/reports/{report}/result.geojson", None, READ),
    ("post", "/api/v1/reports/{report}/share/", {"viewer": "{viewer}"}, CHANGE),
    ("post", "/api/v1/reports/{report}/cancel/", None, CHANGE),
    ("get", "/api/v1/api-keys/", None, KEYS_READ),
    ("post", "/api/v1/api-keys/", {"name": "ci", "role": "analyst"}, KEYS_CHANGE),
    ("get", "/api/v1/api-keys/{key}/", None, KEYS_READ),
    ("post", "/api/v1/api-keys/{key}/revoke/", None, KEYS_CHANGE),
    ("post", "/api/v1/api-keys/{key}/rotate/", None, KEYS_CHANGE),
    ("get", "/api/v1/webhooks/", None, KEYS_READ),
    ("post", "/api/v1/webhooks/", {"url": "https://buyer.example/hook", "events": ["report.failed"]}, KEYS_CHANGE),
    ("get", "/api/v1/webhooks/{webhook}/", None, KEYS_READ),
    ("get", "/api/v1/webhooks/{webhook}/deliveries/", None, KEYS_READ),
    ("post", "/api/v1/webhooks/{webhook}/test/", None, KEYS_CHANGE),
    ("delete", "/api/v1/webhooks/{webhook}/", None, KEYS_CHANGE),
    ("get", "/api/v1/members/", None, KEYS_READ),
    ("post", "/api/v1/members/", {"email": "new@example.org", "role": "analyst"}, KEYS_CHANGE),
    ("get", "/api/v1/members/{member}/", None, KEYS_READ),
    ("patch", "/api/v1/members/{member}/", {"role": "finance"}, KEYS_CHANGE),
    ("delete", "/api/v1/members/{member}/", None, KEYS_CHANGE),
    ("post", "/api/v1/quotes/", ORDER_BODY, CREATE),
    ("get", "/api/v1/organisation/", None, "catalog"),
    ("patch", "/api/v1/organisation/", {"monthly_spending_limit": "100.00"}, SETTING),
    ("get", "/api/v1/usage/", None, FINANCE_READ),
    ("get", "/api/v1/invoices/", None, FINANCE_READ),
]
# What each kind of endpoint answers each role of the organisation (a viewer sees nothing
# that was not shared with it: its reads of an id are 404). A cancel of the succeeded report
# is a 409 for those who may cancel.
ANSWERS = {
    "catalog": dict.fromkeys(Role.values, 200),
    "list": dict.fromkeys(Role.values, 200),
    CREATE: {Role.OWNER: 201, Role.ANALYST: 201, Role.FINANCE: 403, Role.VIEWER: 403},
    READ: {Role.OWNER: 200, Role.ANALYST: 200, Role.FINANCE: 200, Role.VIEWER: 404},
    CHANGE: {Role.OWNER: "ok", Role.ANALYST: "ok", Role.FINANCE: 403, Role.VIEWER: 403},
    KEYS_READ: {Role.OWNER: 200, Role.ANALYST: 403, Role.FINANCE: 403, Role.VIEWER: 403},
    KEYS_CHANGE: {Role.OWNER: "ok", Role.ANALYST: 403, Role.FINANCE: 403, Role.VIEWER: 403},
    SETTING: {Role.OWNER: 200, Role.ANALYST: 403, Role.FINANCE: 403, Role.VIEWER: 403},
    FINANCE_READ: {Role.OWNER: 200, Role.ANALYST: 403, Role.FINANCE: 200, Role.VIEWER: 403},
}
CHANGED_OK = {
    "patch": 200,
    "delete": 204,
    "share": 204,
    "cancel": 409,
    "revoke": 200,
    "rotate": 201,
    "test/": 202,
    "api-keys/": 201,
    "webhooks/": 201,
    "members/": 201,
}


@pytest.fixture
def world(tenant, city, django_capture_on_commit_callbacks):
    """The tenant's area, a succeeded report, a key and a viewer key to share with."""
    area = services.area_create(tenant=tenant, name="Ours", geometry=MultiPolygon(grid.square(0, 0, 4, 4), srid=4326))
    owner_key, owner_raw = services.api_key_create(tenant=tenant, name="owner", role=Role.OWNER)
    owner = APIClient()
    owner.credentials(HTTP_AUTHORIZATION=f"Api-Key {owner_raw}")
    with django_capture_on_commit_callbacks(execute=True):
        report_id = owner.post("/api/v1/reports/", ORDER_BODY, format="json").json()["id"]
    key, _ = services.api_key_create(tenant=tenant, name="service", role=Role.ANALYST)
    viewer, _ = services.api_key_create(tenant=tenant, name="board", role=Role.VIEWER)
    owner_principal = services.Principal(tenant=tenant, role=Role.OWNER, api_key=owner_key)
    webhook = services.webhook_endpoint_create(
        principal=owner_principal, url="https://buyer.example/hook", events=["report.succeeded"]
    )
    member = services.member_add(principal=owner_principal, email="member@example.org", role=Role.ANALYST)
    return {
        "area": area.pk,
        "report": report_id,
        "key": key.pk,
        "viewer": viewer.prefix,
        "webhook": webhook.pk,
        "member": member.pk,
    }


def client(actor: str, tenant) -> APIClient:
    caller = APIClient()
    if actor == "anonymous":
        return caller
    owner_of = granted_tenant() if actor == "other_tenant" else tenant
    role = Role.OWNER if actor == "other_tenant" else actor
    caller.credentials(
        HTTP_AUTHORIZATION=f"Api-Key {services.api_key_create(tenant=owner_of, name=actor, role=role)[1]}"
    )
    return caller


def expected(actor: str, method: str, path: str, kind: str) -> int:
    if actor == "anonymous":
        return 401
    if actor == "other_tenant":
        if "{" in path:
            return 404  # another organisation's id does not exist for them
        return {CREATE: 201, KEYS_CHANGE: 201}.get(kind, 200)
    answer = ANSWERS[kind][actor]
    if answer == "ok":
        return next(status for ending, status in CHANGED_OK.items() if ending in path or method == ending)
    return answer


def snapshot(tenant) -> dict:
    return {
        "areas": list(Area.objects.filter(tenant=tenant).values_list("pk", flat=True)),
        "reports": list(Report.objects.filter(tenant=tenant).values_list("pk", "status")),
        "keys": list(ApiKey.objects.filter(tenant=tenant).values_list("pk", "revoked_at", "hashed_key")),
        "shares": Share.objects.count(),
        "audit": AuditEvent.objects.filter(tenant=tenant).count(),
        "webhooks": list(WebhookEndpoint.objects.filter(tenant=tenant).values_list("pk", "url")),
        "members": list(Membership.objects.filter(tenant=tenant).values_list("pk", "role")),
        "quotes": Quote.objects.filter(tenant=tenant).count(),
        "spending_limit": Tenant.objects.get(pk=tenant.pk).monthly_spending_limit_cents,
    }


@pytest.mark.parametrize("actor", ACTORS)
@pytest.mark.parametrize(("method", "path", "body", "kind"), ENDPOINTS, ids=[f"{e[0]} {e[1]}" for e in ENDPOINTS])
def test_the_permission_matrix(world, tenant, actor, method, path, body, kind, django_capture_on_commit_callbacks):
    caller = client(actor, tenant)
    url = path.format(**world)
    payload = {name: value.format(**world) if isinstance(value, str) else value for name, value in (body or {}).items()}
    before = snapshot(tenant)

    with django_capture_on_commit_callbacks(execute=True):
        response = getattr(caller, method)(url, payload or None, format="json")

    assert response.status_code == expected(actor, method, path, kind), response.content
    if response.status_code >= 400:
        assert snapshot(tenant) == before, "a refused call changed something"
    if actor == "other_tenant" and response.status_code == 200 and method == "get" and "results" in response.json():
        ours = {str(world[name]) for name in ("area", "report", "key", "webhook", "member")}
        assert not ours & {str(item.get("id")) for item in response.json()["results"]}, "another organisation's ids"
