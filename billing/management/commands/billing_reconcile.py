from django.core.management.base import BaseCommand, CommandError

from billing import stripe_gateway
from billing.reconcile import HEADER, reconcile_month
from billing.selectors import parse_month


class Command(BaseCommand):
    help = (
        "Compare a billing month of the usage ledger with Stripe: line by line (each invoice item names its usage"
        " line: not sent, missing, at another amount, named for another month, in Stripe twice, only in Stripe),"
        " by invoice (each line on its month's invoice, the one the ledger says; each invoice's net and VAT the sums"
        " of its lines; the local copy as Stripe has it). Ends with 'no differences' or how many."
    )

    def add_arguments(self, parser):
        parser.add_argument("--month", required=True, help="YYYY-MM, a billing month (of BILLING_TIME_ZONE)")

    def handle(self, *args, month: str, **options):
        try:
            first = parse_month(month)
        except ValueError as error:
            raise CommandError(f"--month must be {error}") from None
        try:
            differences = reconcile_month(first)
        except stripe_gateway.StripeFailed as error:
            raise CommandError(f"Stripe could not be read: {error}") from None
        self.stdout.write(HEADER)
        for difference in differences:
            self.stdout.write(difference.csv())
        self.stdout.write(f"{month}: {len(differences)} differences" if differences else f"{month}: no differences")
