"""The API's view sets' common ground: requests in the caller's time zone, the rows the caller
may see, and the settings only owners read and change."""

from zoneinfo import ZoneInfo

from django.db.models import Model, QuerySet
from django.utils import timezone
from rest_framework import mixins, viewsets
from rest_framework.permissions import IsAuthenticated

from marketplace.api.permissions import RolePermission
from marketplace.models import Role
from marketplace.services import Principal


class TenantViewSet(viewsets.GenericViewSet):
    """Requests run in the caller's time zone: times without an offset are read in it."""

    permission_classes = [IsAuthenticated, RolePermission]

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        timezone.activate(ZoneInfo(request.user.tenant.time_zone))

    def finalize_response(self, request, response, *args, **kwargs):
        timezone.deactivate()
        return super().finalize_response(request, response, *args, **kwargs)


class TenantRowsViewSet(TenantViewSet):
    """Rows of `model` that the caller may see, as `visible` selects them."""

    model: type[Model]

    def get_queryset(self) -> QuerySet:
        if getattr(self, "swagger_fake_view", False):  # schema generation has no caller
            return self.model.objects.none()
        return self.visible(self.request.user)

    def visible(self, principal: Principal) -> QuerySet:
        raise NotImplementedError


class OwnersOnlyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantRowsViewSet):
    """An organisation's settings that only its owners read and change: keys, webhooks, members."""

    read_roles = (Role.OWNER,)
    write_roles = (Role.OWNER,)
