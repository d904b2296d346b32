"""The audit log: who did what in an organisation. Append-only."""

from django.contrib.auth.models import User

from marketplace.models import ApiKey, AuditEvent, Tenant


def audit(
    *, tenant: Tenant, actor: ApiKey | None, action: str, target: str, staff_user: User | None = None, **details
) -> None:
    """Record who did what: an API key (actor), an account manager in the admin (staff_user), or
    neither (a command); the log is append-only."""
    AuditEvent.objects.create(
        tenant=tenant, actor=actor, staff_user=staff_user, action=action, target=target[:200], details=details
    )
