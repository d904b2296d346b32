"""Who acts: API keys and their roles, the members keys act for, and what owners share with viewer keys."""

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from marketplace import selectors
from marketplace.exceptions import Conflict, NotPermitted, ServiceError
from marketplace.models import ApiKey, Area, Membership, Report, Role, Share, Tenant
from marketplace.services.audit import audit

API_KEY_PREFIX_BYTES = 4
API_KEY_SECRET_BYTES = 32
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


@dataclass(frozen=True)
class Principal:
    """Who is calling: a tenant, acting with the role of the API key used; or an account manager
    in the admin (staff_user, no key), who acts for the organisation as its owner would."""

    tenant: Tenant
    role: str
    api_key: ApiKey | None
    staff_user: User | None = None
    is_authenticated = True
    is_anonymous = False


def staff_principal(*, tenant: Tenant, staff_user: User) -> Principal:
    """An account manager acting on a tenant in the admin: audited under their name."""
    return Principal(tenant=tenant, role=Role.OWNER, api_key=None, staff_user=staff_user)


def api_key_create(
    *,
    tenant: Tenant,
    name: str,
    role: str,
    expires_at: dt.datetime | None = None,
    member: str | None = None,
    actor: ApiKey | None = None,
    staff_user: User | None = None,
) -> tuple[ApiKey, str]:
    """Create a key and return it with its secret, which is never stored or shown again.

    member: the email of the member the key acts for; their key has their role, or viewer.
    staff_user: the account manager who made it in the admin (kept on the key and in the log).
    """
    if role not in Role.values:
        raise ServiceError(f"role must be one of {', '.join(Role.values)}, got {role!r}", code="invalid_role")
    if expires_at is not None and expires_at <= timezone.now():
        raise ServiceError("expires_at must be in the future", code="expiry_in_past", field="expires_at")
    holder = None
    if member is not None:
        membership = Membership.objects.select_related("user").filter(tenant=tenant, user__email=member.lower()).first()
        if membership is None:
            raise ServiceError(
                f"{member} is not a member of your organisation; add them first (POST /api/v1/members/)",
                code="unknown_member",
                field="member",
            )
        if role not in _key_roles_of(membership.role):
            raise ServiceError(
                f"{member} is a {membership.role}; their key may be a {membership.role} or viewer key, not {role}",
                code="role_above_member",
                field="role",
            )
        holder = membership.user
    prefix = secrets.token_hex(API_KEY_PREFIX_BYTES)
    raw_key = f"ff_{prefix}_{secrets.token_urlsafe(API_KEY_SECRET_BYTES)}"
    api_key = ApiKey.objects.create(
        tenant=tenant,
        holder=holder,
        name=name,
        role=role,
        prefix=prefix,
        hashed_key=_hash_key(raw_key),
        expires_at=expires_at,
        created_by=staff_user,
    )
    audit(
        tenant=tenant,
        actor=actor,
        staff_user=staff_user,
        action="api_key.created",
        target=f"{prefix} {name}",
        role=role,
        **({"member": holder.email} if holder else {}),
    )
    return api_key, raw_key


def _key_roles_of(member_role: str) -> set[str]:
    return {member_role, Role.VIEWER}


def api_key_rotate(*, api_key: ApiKey, actor: ApiKey | None = None) -> tuple[ApiKey, str]:
    """A new key with the old one's name, role and expiry; the old one is revoked at once."""
    if api_key.revoked_at is not None:
        raise Conflict("the key is revoked; create a new one instead", code="api_key_revoked")
    with transaction.atomic():
        api_key_revoke(api_key=api_key, actor=actor)
        expires_at = api_key.expires_at if api_key.expires_at and api_key.expires_at > timezone.now() else None
        return api_key_create(
            tenant=api_key.tenant,
            name=api_key.name,
            role=api_key.role,
            expires_at=expires_at,
            member=api_key.holder.email if api_key.holder else None,
            actor=actor,
        )


def api_key_authenticate(*, raw_key: str) -> Principal | None:
    """The principal for a presented key, or None if it is unknown, malformed or revoked."""
    parts = raw_key.split("_", 2)
    if len(parts) != 3 or parts[0] != "ff":
        return None
    api_key = selectors.api_key_by_prefix(parts[1])
    if api_key is None or api_key.revoked_at is not None:
        return None
    if api_key.expires_at is not None and api_key.expires_at <= timezone.now():
        return None
    # The key is 256 random bits, so one fast hash is enough; compare in constant time.
    if not hmac.compare_digest(api_key.hashed_key, _hash_key(raw_key)):
        return None
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
    return Principal(tenant=api_key.tenant, role=api_key.role, api_key=api_key)


def api_key_revoke(
    *, api_key: ApiKey, actor: ApiKey | None = None, staff_user: User | None = None, reason: str | None = None
) -> None:
    """Revoke the key for good: nothing un-revokes it (the database refuses, migration 0022)."""
    revoked = ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    if revoked:
        audit(
            tenant=api_key.tenant,
            actor=actor,
            staff_user=staff_user,
            action="api_key.revoked",
            target=f"{api_key.prefix} {api_key.name}",
            **({"reason": reason} if reason else {}),
        )
    api_key.refresh_from_db()


def api_key_update(
    *, api_key: ApiKey, name: str, expires_at: dt.datetime | None, staff_user: User | None = None
) -> ApiKey:
    """Rename a key or change its expiry (account managers, in the admin); its role, holder and
    revocation are not changed here: revoke and make another."""
    before = ApiKey.objects.values("name", "expires_at").get(pk=api_key.pk)
    changes = {
        field: [_as_text(before[field]), _as_text(value)]
        for field, value in (("name", name), ("expires_at", expires_at))
        if before[field] != value
    }
    if changes:
        ApiKey.objects.filter(pk=api_key.pk).update(name=name, expires_at=expires_at)
        audit(
            tenant=api_key.tenant,
            actor=None,
            staff_user=staff_user,
            action="api_key.changed",
            target=f"{api_key.prefix} {name}",
            **changes,
        )
        api_key.refresh_from_db()
    return api_key


def _as_text(value) -> str | None:
    return value.isoformat() if isinstance(value, dt.datetime) else value


def _hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def _member_keys_revoke(*, principal: Principal, membership: Membership, keep_roles: set[str], reason: str) -> None:
    """Revoke the member's active keys whose role is not among keep_roles."""
    keys = ApiKey.objects.filter(tenant=membership.tenant, holder=membership.user, revoked_at__isnull=True)
    for api_key in keys.exclude(role__in=keep_roles):
        api_key_revoke(api_key=api_key, actor=principal.api_key, staff_user=principal.staff_user, reason=reason)


def member_add(*, principal: Principal, email: str, role: str) -> Membership:
    """Add a person to the organisation with a role; an address can belong to one organisation only."""
    email = email.strip().lower()
    user = User.objects.filter(username=email).first()
    if user is not None and hasattr(user, "membership"):
        if user.membership.tenant_id == principal.tenant.pk:
            raise Conflict(f"{email} is already a member; change their role instead", code="already_a_member")
        raise Conflict(f"{email} belongs to another organisation", code="member_of_another_organisation")
    with transaction.atomic():
        if user is None:
            user = User.objects.create_user(username=email, email=email)  # no password: no login of its own
        return membership_create(principal=principal, user=user, role=role)


def membership_create(*, principal: Principal, user: User, role: str) -> Membership:
    """Make an existing person a member (member_add finds or makes them by email; the admin picks them)."""
    if user.is_staff or user.is_superuser:
        # A staff account in a tenant would carry staff rights into a customer's keys and audit trail.
        raise NotPermitted(
            f"{user.username} is a staff account, which cannot be a member of an organisation", code="staff_account"
        )
    if role not in Role.values:
        raise ServiceError(f"role must be one of {', '.join(Role.values)}, got {role!r}", code="invalid_role")
    with transaction.atomic():
        membership = Membership.objects.create(user=user, tenant=principal.tenant, role=role)
        audit(
            tenant=principal.tenant,
            actor=principal.api_key,
            staff_user=principal.staff_user,
            action="member.added",
            target=user.email or user.username,
            role=role,
        )
    return membership


def member_change_role(*, principal: Principal, membership: Membership, role: str) -> Membership:
    """Change a member's role; their keys the new role does not allow are revoked first."""
    before = Membership.objects.values_list("role", flat=True).get(pk=membership.pk)
    if role not in Role.values:
        raise ServiceError(f"role must be one of {', '.join(Role.values)}, got {role!r}", code="invalid_role")
    if role != before:
        with transaction.atomic():
            # Revoked first, so the log names who; the database would revoke them anyway (0022).
            _member_keys_revoke(
                principal=principal, membership=membership, keep_roles=_key_roles_of(role), reason=f"{role} now"
            )
            membership.role = role
            membership.save(update_fields=["role"])
            audit(
                tenant=principal.tenant,
                actor=principal.api_key,
                staff_user=principal.staff_user,
                action="member.role_changed",
                target=membership.user.email or membership.user.username,
                before=before,
                after=role,
            )
    return membership


def member_remove(*, principal: Principal, membership: Membership) -> None:
    """Remove a member; all their keys are revoked first."""
    email = membership.user.email or membership.user.username
    with transaction.atomic():
        _member_keys_revoke(principal=principal, membership=membership, keep_roles=set(), reason="member removed")
        membership.delete()
        audit(
            tenant=principal.tenant,
            actor=principal.api_key,
            staff_user=principal.staff_user,
            action="member.removed",
            target=email,
        )


def share_create(*, principal: Principal, viewer_prefix: str, area: Area | None = None, report: Report | None = None):
    """Show an area or a report to a viewer key of the same organisation."""
    viewer = ApiKey.objects.filter(tenant=principal.tenant, prefix=viewer_prefix, revoked_at__isnull=True).first()
    if viewer is None:
        raise ServiceError(f"your organisation has no active key {viewer_prefix!r}", code="unknown_key", field="viewer")
    if viewer.role != Role.VIEWER:
        raise ServiceError(
            f"key {viewer_prefix} is a {viewer.role} key, which sees everything already; share with viewer keys",
            code="not_a_viewer",
            field="viewer",
        )
    share, created = Share.objects.get_or_create(
        viewer=viewer, area=area, report=report, defaults={"shared_by": principal.api_key}
    )
    if created:
        target = f"area {area.pk}" if area else f"report {report.pk}"
        audit(tenant=principal.tenant, actor=principal.api_key, action="shared", target=target, viewer=viewer.prefix)
    return share
