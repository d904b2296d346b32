from django.core.management.base import BaseCommand, CommandError

from billing import stripe_gateway
from billing.models import StripeAccount, UsageLine, UsageSync
from billing.selectors import all_lines_in_month, parse_month


class Command(BaseCommand):
    help = (
        "Compare a month of the usage ledger with Stripe, line by line (each invoice item names its usage line):"
        " lists every line not sent, missing in Stripe or at another amount there, and every Stripe item whose"
        " line the ledger does not have. Ends with 'no differences' or how many."
    )

    def add_arguments(self, parser):
        parser.add_argument("--month", required=True, help="YYYY-MM, a calendar month of BILLING_TIME_ZONE")

    def handle(self, *args, month: str, **options):
        try:
            first = parse_month(month)
        except ValueError as error:
            raise CommandError(f"--month must be {error}") from None
        lines = all_lines_in_month(first).select_related("tenant")
        differences = []
        for account in StripeAccount.objects.select_related("tenant"):
            try:
                in_stripe = {
                    item["usage_line_id"]: item
                    for item in stripe_gateway.usage_items_of(customer_id=account.customer_id)
                }
            except stripe_gateway.StripeUnavailable as error:
                raise CommandError(f"Stripe could not be reached: {error}") from None
            differences += _compare(account, lines.filter(tenant=account.tenant), in_stripe)
        unaccounted = lines.exclude(tenant__stripe_account__isnull=False)
        differences += [
            _row(line, "not sent to Stripe (no customer yet)", line.amount_cents, None) for line in unaccounted
        ]
        self.stdout.write("tenant,usage_line,difference,ledger_cents,stripe_cents")
        for row in differences:
            self.stdout.write(",".join(str(value) for value in row))
        self.stdout.write(f"{month}: {len(differences)} differences" if differences else f"{month}: no differences")


def _compare(account, lines, in_stripe: dict) -> list[tuple]:
    rows = []
    syncs = {sync.pk: sync for sync in UsageSync.objects.filter(line__in=lines)}
    for line in lines:
        item = in_stripe.pop(str(line.pk), None)
        sync = syncs.get(line.pk)
        if item is None:
            if sync is None or sync.state == UsageSync.State.PENDING:
                attempts = f"{sync.attempts} tries, last error: {sync.last_error}" if sync else "no outbox row"
                rows.append(_row(line, f"not sent to Stripe ({attempts})".replace(",", ";"), line.amount_cents, None))
            else:
                rows.append(_row(line, "missing in Stripe", line.amount_cents, None))
        elif item["amount"] != line.amount_cents or item["currency"] != line.currency:
            rows.append(_row(line, f"amount differs ({item['currency']})", line.amount_cents, item["amount"]))
    known = set(
        UsageLine.objects.filter(pk__in=[int(key) for key in in_stripe if key.isdigit()]).values_list("pk", flat=True)
    )
    for key, item in in_stripe.items():
        if not key.isdigit() or int(key) not in known:
            rows.append((account.tenant.name, key, f"only in Stripe (item {item['item']})", None, item["amount"]))
    return rows


def _row(line, what: str, ledger_cents, stripe_cents) -> tuple:
    return (line.tenant.name, line.pk, what, ledger_cents, stripe_cents)
