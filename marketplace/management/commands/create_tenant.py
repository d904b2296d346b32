from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from marketplace.models import Tenant
from marketplace.services import tenant_create


class Command(BaseCommand):
    help = "Create a tenant (a customer organisation)."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--kind", required=True, choices=Tenant.Kind.values)
        parser.add_argument("--time-zone", default="Europe/Berlin")

    def handle(self, *args, name: str, kind: str, time_zone: str, **options):
        if Tenant.objects.filter(name=name).exists():
            raise CommandError(f"a tenant named {name!r} exists already")
        try:
            tenant = tenant_create(name=name, kind=kind, time_zone=time_zone)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        self.stdout.write(self.style.SUCCESS(f"created tenant {tenant.name!r} ({tenant.kind}, {tenant.time_zone})"))
