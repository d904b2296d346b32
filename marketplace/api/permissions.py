from rest_framework import permissions

from marketplace.models import Role

ALL_ROLES = tuple(Role.values)
ROLES_THAT_ORDER = (Role.OWNER, Role.ANALYST)


class RolePermission(permissions.BasePermission):
    """What each role may do on a view: its read_roles read, its write_roles change.

    Which objects a role sees is the queryset's business (a viewer sees what is shared with it)."""

    message = "your role may not do this"

    def has_permission(self, request, view) -> bool:
        if request.method in permissions.SAFE_METHODS:
            allowed = getattr(view, "read_roles", ALL_ROLES)
        else:
            allowed = getattr(view, "write_roles", ROLES_THAT_ORDER)
        if request.user.role in allowed:
            return True
        roles = " or ".join(allowed)
        self.message = f"your key's role ({request.user.role}) may not do this; it takes a key of role {roles}"
        return False
