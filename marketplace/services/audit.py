"""The audit log: who did what in an organisation. Append-only."""

from marketplace.models import ApiKey, AuditEvent, Tenant


def audit(*, tenant: Tenant, actor: ApiKey | None, action: str, target: str, **details) -> None:
    """Record who did what; the log is append-only."""
    AuditEvent.objects.create(tenant=tenant, actor=actor, action=action, target=target[:200], details=details)
