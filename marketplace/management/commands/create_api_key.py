from django.core.management.base import BaseCommand, CommandError

from marketplace.exceptions import ServiceError
from marketplace.models import Role, Tenant
from marketplace.services import api_key_create


class Command(BaseCommand):
    help = "Create an API key for a tenant and print it once; only its hash is stored."

    def add_arguments(self, parser):
        parser.add_argument("tenant", help="tenant name")
        parser.add_argument("--role", required=True, choices=Role.values)
        parser.add_argument("--name", default="API key")
        parser.add_argument("--member", help="email of the member the key acts for (revoked when they leave)")

    def handle(self, *args, tenant: str, role: str, name: str, member: str | None, **options):
        tenant_obj = Tenant.objects.filter(name=tenant).first()
        if tenant_obj is None:
            raise CommandError(f"no tenant named {tenant!r}")
        try:
            api_key, raw_key = api_key_create(tenant=tenant_obj, name=name, role=role, member=member)
        except ServiceError as error:
            raise CommandError(str(error)) from None
        self.stderr.write(f"API key {api_key.prefix} ({role}) for {tenant}; it is shown only now:")
        self.stdout.write(raw_key)
