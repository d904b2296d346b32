from django.core.management.base import BaseCommand, CommandError

from billing import stripe_gateway
from billing.selectors import parse_month
from billing.services import month_close_all


class Command(BaseCommand):
    help = (
        "Close a month: top plans with a monthly minimum up to it, send what is still waiting in the outbox, then"
        " invoice each tenant's pending items in Stripe and try to collect (beat runs it on the 1st for the month"
        " before). Run billing_reconcile after."
    )

    def add_arguments(self, parser):
        parser.add_argument("--month", required=True, help="YYYY-MM, the month the invoices are for")

    def handle(self, *args, month: str, **options):
        try:
            closed = month_close_all(month=parse_month(month))
        except ValueError as error:
            raise CommandError(f"--month must be {error}") from None
        except stripe_gateway.StripeUnavailable as error:
            raise CommandError(f"Stripe could not be reached: {error}; run it again") from None
        for line in closed.minimums:
            self.stdout.write(
                f"{line.tenant.name}: {line.product} topped up by {line.amount_cents / 100:.2f} {line.currency}"
            )
        for tenant, invoice in closed.invoices:
            if invoice is None:
                self.stdout.write(f"{tenant.name}: nothing to invoice")
            else:
                self.stdout.write(
                    f"{tenant.name}: invoice {invoice.stripe_invoice_id}, {invoice.status},"
                    f" {invoice.amount_due_cents / 100:.2f} {invoice.currency}"
                )
