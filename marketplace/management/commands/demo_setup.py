import json
import shlex
from pathlib import Path

from django.conf import settings
from django.contrib.gis.geos import MultiPolygon, Polygon
from django.core.management import call_command
from django.core.management.base import BaseCommand

from insights.synthetic.city import DEMO_CITY
from marketplace.models import LicensedRegion, Product, Role, Tenant
from marketplace.services import api_key_create, licensed_region_create, product_grant, region_license, tenant_create

DEMO_TENANT = "Demo Shopping Centres GmbH"
DEMO_REGION = "Demo city"
DEMO_PRODUCTS = ("footfall", "compare", "dwell", "catchment", "od-matrix")
CLIENT_DEFAULT_URL = "http://127.0.0.1:8000"  # where the footfall command looks without --url


class Command(BaseCommand):
    help = "Load the demo city, make a demo tenant with footfall granted, and print a new API key and a first curl."

    def add_arguments(self, parser):
        parser.add_argument("--base-url", default="http://127.0.0.1:8000")
        parser.add_argument(
            "--via-pipeline",
            action="store_true",
            help="build the city through the operator's anonymization pipeline (pipeline_run --load) instead",
        )

    def handle(self, *args, base_url: str, via_pipeline: bool = False, **options):
        if via_pipeline:
            call_command("pipeline_run", load=True, stdout=self.stdout)
        else:
            call_command("generate_demo_city", stdout=self.stdout)  # progress goes to the real stderr
        # Loads release their data; this releases what was loaded under another policy before.
        call_command("build_releases", stdout=self.stdout)
        tenant = Tenant.objects.filter(name=DEMO_TENANT).first() or tenant_create(
            name=DEMO_TENANT, kind=Tenant.Kind.RETAIL
        )
        for product in Product.objects.filter(code__in=DEMO_PRODUCTS):
            product_grant(tenant=tenant, product=product)
        region = LicensedRegion.objects.filter(name=DEMO_REGION).first() or licensed_region_create(
            name=DEMO_REGION, geometry=_demo_city_outline()
        )
        region_license(tenant=tenant, region=region)
        api_key, raw_key = api_key_create(tenant=tenant, name="demo key", role=Role.ANALYST)

        order = {
            "product": "footfall",
            "name": DEMO_CITY.malls[0].name,
            "geometry": json.loads(_square_around_first_mall().geojson),
            "start": "2026-03-23T00:00:00+01:00",
            "end": "2026-03-30T00:00:00+02:00",
            "granularity": "day",
        }
        auth = f"Authorization: Api-Key {raw_key}"
        # The same area as a file, for the footfall command (client/, which bin/setup installs).
        area_file = Path(settings.BASE_DIR) / "var" / "westpark.geojson"
        area_file.parent.mkdir(exist_ok=True)
        area_file.write_text(json.dumps(order["geometry"]) + "\n")
        command = shlex.join(
            [
                ".venv/bin/footfall", *(["--url", base_url] if base_url != CLIENT_DEFAULT_URL else []),
                "order", "--file", str(area_file.relative_to(settings.BASE_DIR)),
                "--name", order["name"], "--start", "2026-03-23", "--end", "2026-03-30",
                "--granularity", "day", "--wait", "-o", "westpark.csv",
            ]
        )  # fmt: skip
        self.stdout.write(
            f"\nDemo tenant: {DEMO_TENANT} (analyst key {api_key.prefix}, shown only now)\n\n"
            f"  export FOOTFALL_KEY={raw_key}\n\n"
            "Order a daily footfall report for a week around a shopping centre (the week of the DST change):\n\n"
            f"  curl -s -X POST {base_url}/api/v1/reports/ -H 'Authorization: Api-Key {raw_key}' \\\n"
            f"    -H 'Content-Type: application/json' -d {shlex.quote(json.dumps(order))}\n\n"
            "Then fetch it with the id it returned (status goes queued -> running -> succeeded):\n\n"
            f"  curl -s {base_url}/api/v1/reports/<id>/ -H {shlex.quote(auth)}\n"
            f"  curl -s {base_url}/api/v1/reports/<id>/result.csv -H {shlex.quote(auth)}\n\n"
            "Or the same order with the footfall command (it waits, with a progress bar, and saves the"
            " result; docs/client.md):\n\n"
            f"  {command}\n\n"
            f"Or in a browser: open {base_url}/ and sign in with the key (a map to draw the area on).\n\n"
            f"API docs: {base_url}/api/v1/docs/\n"
        )


def _demo_city_outline() -> MultiPolygon:
    """The demo city's grid with a kilometre around it."""
    city = DEMO_CITY
    box = Polygon.from_bbox(
        (
            city.origin_east - 1000,
            city.origin_north - 1000,
            city.origin_east + city.cols * 250 + 1000,
            city.origin_north + city.rows * 250 + 1000,
        )
    )
    box.srid = 3035
    box.transform(4326)
    return MultiPolygon(box, srid=4326)


def _square_around_first_mall() -> Polygon:
    mall = DEMO_CITY.malls[0]
    east = DEMO_CITY.origin_east + mall.east_km * 1000
    north = DEMO_CITY.origin_north + mall.north_km * 1000
    square = Polygon.from_bbox((east - 500, north - 500, east + 500, north + 500))
    square.srid = 3035
    square.transform(4326)
    # Round to ~1 m so the printed curl stays readable.
    return Polygon([(round(x, 5), round(y, 5)) for x, y in square.exterior_ring.coords], srid=4326)
