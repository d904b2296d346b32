import datetime as dt

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from billing import stripe_gateway
from billing.models import StripeAccount
from billing.selectors import all_lines_in_month
from billing.services import minimums_record, month_close, usage_sync


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
            first = dt.datetime.strptime(month, "%Y-%m").date()
        except ValueError:
            raise CommandError(f"--month must be a month such as 2026-03, got {month!r}") from None
        for line in minimums_record(month=first):
            self.stdout.write(
                f"{line.tenant.name}: {line.product} topped up by {line.amount_cents / 100:.2f} {line.currency}"
            )
        waiting = all_lines_in_month(first, settings.BILLING_TIME_ZONE).filter(sync__state="pending")
        for line_id in waiting.values_list("pk", flat=True):
            usage_sync(line_id=line_id)
        for account in StripeAccount.objects.select_related("tenant").order_by("tenant__name"):
            try:
                invoice = month_close(tenant=account.tenant, month=month)
            except stripe_gateway.StripeUnavailable as error:
                raise CommandError(f"Stripe could not be reached: {error}; run it again") from None
            if invoice is None:
                self.stdout.write(f"{account.tenant.name}: nothing to invoice")
                continue
            self.stdout.write(
                f"{account.tenant.name}: invoice {invoice.stripe_invoice_id}, {invoice.status},"
                f" {invoice.amount_due_cents / 100:.2f} {invoice.currency}"
            )
