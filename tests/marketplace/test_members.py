"""Owners manage their organisation's people and roles over the API."""

from rest_framework.test import APIClient

from marketplace.models import AuditEvent, Membership, Role
from tests.errors import assert_error
from tests.factories import granted_tenant

MEMBERS = "/api/v1/members/"


def test_an_owner_adds_changes_and_removes_a_member(tenant, client_for):
    owner = client_for(tenant, Role.OWNER)

    added = owner.post(MEMBERS, {"email": "Ada@Example.org", "role": "analyst"}, format="json")
    assert added.status_code == 201 and added.json()["email"] == "ada@example.org"
    member = added.json()["id"]
    changed = owner.patch(f"{MEMBERS}{member}/", {"role": "finance"}, format="json")
    assert changed.status_code == 200 and changed.json()["role"] == "finance"
    assert [item["email"] for item in owner.get(MEMBERS).json()["results"]] == ["ada@example.org"]
    assert owner.delete(f"{MEMBERS}{member}/").status_code == 204

    assert not Membership.objects.exists()
    actions = list(
        AuditEvent.objects.filter(tenant=tenant, action__startswith="member.").values_list("action", "details")
    )
    assert actions == [
        ("member.removed", {}),
        ("member.role_changed", {"before": "analyst", "after": "finance"}),
        ("member.added", {"role": "analyst"}),
    ]


def test_a_person_belongs_to_one_organisation(tenant, client_for):
    client_for(granted_tenant(), Role.OWNER).post(MEMBERS, {"email": "bo@example.org", "role": "viewer"}, format="json")
    owner = client_for(tenant, Role.OWNER)

    response = owner.post(MEMBERS, {"email": "bo@example.org", "role": "analyst"}, format="json")

    assert_error(response, 409, "member_of_another_organisation")
    assert Membership.objects.get().tenant != tenant


KEYS = "/api/v1/api-keys/"


def add_member(owner, email: str, role: str) -> int:
    response = owner.post(MEMBERS, {"email": email, "role": role}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def member_key(owner, email: str, role: str):
    return owner.post(KEYS, {"name": f"{email}'s key", "role": role, "member": email}, format="json")


def test_a_members_key_acts_for_them_with_their_role_or_as_a_viewer(tenant, client_for):
    owner = client_for(tenant, Role.OWNER)
    add_member(owner, "ada@example.org", "analyst")

    analyst_key = member_key(owner, "Ada@example.org", "analyst")
    viewer_key = member_key(owner, "ada@example.org", "viewer")
    above = member_key(owner, "ada@example.org", "owner")

    assert analyst_key.status_code == viewer_key.status_code == 201
    assert analyst_key.json()["member"] == "ada@example.org"
    assert_error(above, 400, "role_above_member", attr="role")
    assert_error(member_key(owner, "nobody@example.org", "viewer"), 400, "unknown_member", attr="member")
    assert [key["member"] for key in owner.get(KEYS).json()["results"]].count("ada@example.org") == 2


def test_a_member_who_leaves_loses_their_keys_at_once(tenant, client_for):
    owner = client_for(tenant, Role.OWNER)
    member = add_member(owner, "ada@example.org", "analyst")
    ada = APIClient()
    ada.credentials(HTTP_AUTHORIZATION=f"Api-Key {member_key(owner, 'ada@example.org', 'analyst').json()['key']}")
    assert ada.get("/api/v1/reports/").status_code == 200

    assert owner.delete(f"{MEMBERS}{member}/").status_code == 204

    assert ada.get("/api/v1/reports/").status_code == 401
    revoked = AuditEvent.objects.get(action="api_key.revoked")
    assert revoked.details == {"reason": "member removed"}


def test_a_demoted_member_keeps_only_the_keys_their_new_role_allows(tenant, client_for):
    owner = client_for(tenant, Role.OWNER)
    member = add_member(owner, "ada@example.org", "analyst")
    analyst_key = member_key(owner, "ada@example.org", "analyst").json()["prefix"]
    viewer_key = member_key(owner, "ada@example.org", "viewer").json()["prefix"]

    owner.patch(f"{MEMBERS}{member}/", {"role": "finance"}, format="json")

    keys = {key["prefix"]: key["revoked_at"] for key in owner.get(KEYS).json()["results"]}
    assert keys[analyst_key] is not None and keys[viewer_key] is None
