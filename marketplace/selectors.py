"""Reads of the buyer-facing domain. Every query starts from what the caller may see."""

from django.contrib.gis.db.models.functions import Area as AreaOf
from django.contrib.gis.db.models.functions import Transform
from django.db.models import QuerySet
from guardian.shortcuts import get_objects_for_group

from insights.models import Region
from marketplace.models import Area, Product, Report, Tenant


def product_list() -> QuerySet[Product]:
    return Product.objects.filter(is_active=True)


def product_granted_list(*, tenant: Tenant) -> QuerySet[Product]:
    return get_objects_for_group(tenant.group, "marketplace.order_product", klass=product_list())


def area_list(*, tenant: Tenant) -> QuerySet[Area]:
    return Area.objects.filter(tenant=tenant)


def report_list(*, tenant: Tenant) -> QuerySet[Report]:
    return Report.objects.filter(tenant=tenant).select_related("product")


def region_list() -> QuerySet[Region]:
    """Every loaded region, with its boundary in EPSG:4326; reference data every tenant may read."""
    return Region.objects.annotate(geometry_4326=Transform("geometry", 4326), area_m2=AreaOf("geometry")).order_by(
        "code"
    )
