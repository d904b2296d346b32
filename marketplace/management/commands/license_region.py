import datetime as dt
from pathlib import Path

from django.contrib.gis.geos import MultiPolygon
from django.core.management.base import BaseCommand, CommandError

from insights.boundaries import boundary_from_text
from marketplace.exceptions import ServiceError
from marketplace.models import Tenant
from marketplace.services import licensed_region_create, region_license


class Command(BaseCommand):
    help = "Let a tenant order inside a region: a GeoJSON Polygon or MultiPolygon (longitude/latitude)."

    def add_arguments(self, parser):
        parser.add_argument("tenant", help="tenant name")
        parser.add_argument(
            "geojson", type=Path, help="a file holding a GeoJSON geometry, Feature or FeatureCollection"
        )
        parser.add_argument("--name", required=True, help="what to call the region, e.g. the city's name")
        parser.add_argument("--valid-from", type=dt.datetime.fromisoformat, help="ISO 8601; default: now")
        parser.add_argument("--valid-until", type=dt.datetime.fromisoformat, help="ISO 8601, exclusive; default: none")

    def handle(self, *args, tenant: str, geojson: Path, name: str, valid_from, valid_until, **options):
        tenant_obj = Tenant.objects.filter(name=tenant).first()
        if tenant_obj is None:
            raise CommandError(f"no tenant named {tenant!r}")
        try:
            region = licensed_region_create(
                name=name, geometry=_multipolygon(geojson), valid_from=valid_from, valid_until=valid_until
            )
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        region_license(tenant=tenant_obj, region=region)
        self.stdout.write(self.style.SUCCESS(f"{tenant} may now order inside {name}"))


def _multipolygon(path: Path) -> MultiPolygon:
    if not path.is_file():
        raise CommandError(f"no such file: {path}")
    try:
        return boundary_from_text(path.read_text())
    except ValueError as exc:
        raise CommandError(f"{path}: {exc}") from None
