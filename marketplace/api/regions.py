"""Where a buyer can order: the loaded regions (catchment's home regions, the od-matrix's
zones) and the regions the organisation is licensed for, to draw on a map."""

from rest_framework import mixins

from marketplace import selectors
from marketplace.api.bases import TenantViewSet
from marketplace.api.serializers import LicensedRegionOutput, RegionOutput
from marketplace.models import LicensedRegion


class RegionViewSet(mixins.ListModelMixin, TenantViewSet):
    """The loaded home regions (catchment) and zones (od-matrix), by code."""

    serializer_class = RegionOutput

    def get_queryset(self):
        return selectors.region_list()


class LicensedRegionViewSet(mixins.ListModelMixin, TenantViewSet):
    """The regions your organisation may order in, now or from a later date, by name: an order's
    area must lie inside them. Boundaries are simplified to about 10 m, for a map."""

    serializer_class = LicensedRegionOutput
    pagination_class = None  # a handful per organisation

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation has no caller
            return LicensedRegion.objects.none()
        return selectors.licensed_region_map_list(tenant=self.request.user.tenant)
