import factory
from django.contrib.gis.geos import MultiPolygon, Polygon

from marketplace.models import LicensedRegion, Product, Role, Tenant
from marketplace.services import api_key_create, licensed_region_create, product_grant, region_license, tenant_create
from tests import grid


class TenantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tenant

    name = factory.Sequence(lambda n: f"Tenant {n}")
    kind = Tenant.Kind.RETAIL
    time_zone = "Europe/Berlin"

    @classmethod
    def _create(cls, model_class, **kwargs):
        return tenant_create(**kwargs)


def footfall_product() -> Product:
    # Transactional tests flush the table the catalog migration filled, so make sure it is there.
    product, _ = Product.objects.get_or_create(
        code="footfall", defaults={"name": "Footfall", "breakdowns": ["age_band", "gender"]}
    )
    return product


def compare_product() -> Product:
    product, _ = Product.objects.get_or_create(code="compare", defaults={"name": "Compare", "breakdowns": []})
    return product


def dwell_product() -> Product:
    product, _ = Product.objects.get_or_create(code="dwell", defaults={"name": "Dwell time", "breakdowns": []})
    return product


def catchment_product() -> Product:
    product, _ = Product.objects.get_or_create(code="catchment", defaults={"name": "Catchment", "breakdowns": []})
    return product


def od_matrix_product() -> Product:
    product, _ = Product.objects.get_or_create(code="od-matrix", defaults={"name": "OD matrix", "breakdowns": []})
    return product


def granted_tenant(**kwargs) -> Tenant:
    """A tenant that may order footfall anywhere near the test grid."""
    tenant = TenantFactory(**kwargs)
    product_grant(tenant=tenant, product=footfall_product())
    region_license(tenant=tenant, region=test_region())
    return tenant


def test_region() -> LicensedRegion:
    """50 km around the test grid."""
    region = LicensedRegion.objects.filter(name="Test country").first()
    if region is None:
        box = Polygon.from_bbox(
            (
                grid.ORIGIN_EAST - 50_000,
                grid.ORIGIN_NORTH - 50_000,
                grid.ORIGIN_EAST + 50_000,
                grid.ORIGIN_NORTH + 50_000,
            )
        )
        box.srid = 3035
        box.transform(4326)
        region = licensed_region_create(name="Test country", geometry=MultiPolygon(box, srid=4326))
    return region


def raw_api_key(tenant: Tenant, role: str = Role.ANALYST) -> str:
    return api_key_create(tenant=tenant, name=f"{role} key", role=role)[1]
