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


def order_body(**overrides) -> dict:
    """A valid report order body, a fresh dict each call: footfall of the 4 x 4 test block
    (cells (0..3, 0..3)) by day, over the local day of 27 March 2026 in Europe/Berlin.

    Each keyword replaces that key's value or adds the key, e.g. order_body(granularity="hour")
    or order_body(product="dwell", breakdowns=["gender"]). A keyword given None leaves the key
    out: order_body(area=area_id, geometry=None) orders a saved area instead of a drawn one.
    To send an explicit JSON null instead, set the key on the dict returned.
    """
    body = {
        "product": "footfall",
        "geometry": grid.geojson(grid.square(0, 0, 4, 4)),
        "start": "2026-03-27T00:00:00+01:00",
        "end": "2026-03-28T00:00:00+01:00",
        "granularity": "day",
    } | overrides
    return {key: value for key, value in body.items() if value is not None}


def five_day_order_body(**overrides) -> dict:
    """order_body over every local day the `city` fixture loads, 27 March to 1 April 2026
    (the short DST day included); keywords as in order_body."""
    return order_body(**({"end": "2026-04-01T00:00:00+02:00"} | overrides))


# Footfall of the 4 x 4 block over two days: 16 cells x 2 days = 32 cell-days, 6 cents at the
# launch price of 0.002 EUR a cell-day. The billing tests order it.
BILLED_ORDER = order_body(end="2026-03-29T00:00:00+01:00")
