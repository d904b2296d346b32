from rest_framework import permissions

from marketplace.models import Role

ROLES_THAT_ORDER = (Role.OWNER, Role.ANALYST)


class ReadOrOrder(permissions.BasePermission):
    """Every role reads; owners and analysts create, cancel and delete."""

    message = "your role may only read; owners and analysts manage areas and orders"

    def has_permission(self, request, view) -> bool:
        return request.method in permissions.SAFE_METHODS or request.user.role in ROLES_THAT_ORDER
