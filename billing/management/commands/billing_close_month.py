from django.core.management.base import BaseCommand, CommandError

from billing import stripe_gateway
from billing.closing import month_close_all
from billing.selectors import parse_month
from marketplace.exceptions import ServiceError


class Command(BaseCommand):
    help = (
        "Close an ended billing month (a calendar month of BILLING_TIME_ZONE): top plans with a monthly minimum up"
        " to it, send what is still waiting in the outbox, then invoice each tenant's lines of the month in Stripe"
        " and try to collect (beat runs it on the 1st for the month before). A tenant whose invoicing fails is"
        " listed with its error and the others are invoiced; run it again. Run billing_reconcile after."
    )

    def add_arguments(self, parser):
        parser.add_argument("--month", required=True, help="YYYY-MM, the month the invoices are for")

    def handle(self, *args, month: str, **options):
        try:
            closed = month_close_all(month=parse_month(month))
        except ValueError as error:
            raise CommandError(f"--month must be {error}") from None
        except ServiceError as error:
            raise CommandError(str(error)) from None
        except stripe_gateway.StripeFailed as error:
            raise CommandError(f"Stripe: {error}; run it again") from None
        for line in closed.minimums:
            self.stdout.write(
                f"{line.tenant.name}: {line.product} topped up by {line.amount_cents / 100:.2f} {line.currency}"
            )
        failed = 0
        for tenant, invoice, error in closed.invoices:
            if error:
                failed += 1
                self.stdout.write(f"{tenant.name}: NOT INVOICED: {error}")
            elif invoice is None:
                self.stdout.write(f"{tenant.name}: nothing to invoice")
            else:
                self.stdout.write(
                    f"{tenant.name}: invoice {invoice.number or invoice.stripe_invoice_id}"
                    f" ({invoice.stripe_invoice_id}), {invoice.status}, net {invoice.subtotal_cents / 100:.2f}"
                    f" VAT {invoice.tax_cents / 100:.2f} total {invoice.amount_due_cents / 100:.2f} {invoice.currency}"
                )
        if failed:
            self.stderr.write(f"{failed} tenant(s) not invoiced; run the close again once fixed")
