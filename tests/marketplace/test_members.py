"""Owners manage their organisation's people and roles over the API."""

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
