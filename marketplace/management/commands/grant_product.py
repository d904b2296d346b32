import datetime as dt

from django.core.management.base import BaseCommand, CommandError

from marketplace.exceptions import ServiceError
from marketplace.models import Product, Tenant
from marketplace.services import product_grant


class Command(BaseCommand):
    help = "Let a tenant order a product."

    def add_arguments(self, parser):
        parser.add_argument("tenant", help="tenant name")
        parser.add_argument("product", help="product code, e.g. footfall")
        parser.add_argument("--valid-from", type=dt.datetime.fromisoformat, help="ISO 8601; default: now")
        parser.add_argument("--valid-until", type=dt.datetime.fromisoformat, help="ISO 8601, exclusive; default: none")

    def handle(self, *args, tenant: str, product: str, valid_from, valid_until, **options):
        tenant_obj = Tenant.objects.filter(name=tenant).first()
        if tenant_obj is None:
            raise CommandError(f"no tenant named {tenant!r}")
        product_obj = Product.objects.filter(code=product).first()
        if product_obj is None:
            codes = ", ".join(Product.objects.values_list("code", flat=True))
            raise CommandError(f"no product {product!r}; products: {codes}")
        try:
            product_grant(tenant=tenant_obj, product=product_obj, valid_from=valid_from, valid_until=valid_until)
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(self.style.SUCCESS(f"{tenant} may now order {product}"))
