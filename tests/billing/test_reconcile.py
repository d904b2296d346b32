"""Reconciliation checks months and invoices, not only amounts: each line on its own month's
invoice and on one only, each invoice's net and VAT the sums of its lines, nothing missing."""

import datetime as dt

from billing.closing import month_close_all
from billing.models import StripeAccount, UsageSync
from billing.sync import usage_sync
from tests.billing import clock
from tests.billing.test_months import EDGE, NOVEMBER, billed_at, existing_since, ordered, reconcile

UTC = dt.UTC


def test_reconciliation_finds_lines_on_the_wrong_invoice_twice_or_missing(api, tenant, city, fake_stripe):
    existing_since(tenant, dt.datetime(2026, 10, 1, tzinfo=UTC))
    first, second, third = (
        billed_at(ordered(api, name), dt.datetime(2026, 11, day, 12, tzinfo=UTC))
        for name, day in (("a", 10), ("b", 11), ("c", 12))
    )
    assert usage_sync(line_id=first.pk) == "synced"
    customer_id = StripeAccount.objects.get().customer_id
    # Someone in Stripe: the first line's item is invoiced on its own with October's name ...
    stray = fake_stripe.v1.invoices.create(params={"customer": customer_id})
    fake_stripe.v1.invoices.update(stray.id, params={"metadata": {months_key(): "2026-10"}})
    for line in (second, third):
        assert usage_sync(line_id=line.pk) == "synced"
    # ... the second line gets a second item, and the third line's item is deleted.
    fake_stripe.v1.invoice_items.create(
        params={"customer": customer_id, "amount": second.amount_cents, "currency": "eur",
                "metadata": {"usage_line_id": str(second.pk), months_key(): "2026-11"}}
    )  # fmt: skip
    fake_stripe.v1.invoice_items.delete(UsageSync.objects.get(pk=third.pk).stripe_invoice_item_id)
    with clock.at(EDGE):
        month_close_all(month=NOVEMBER)

    report = reconcile("2026-11")

    assert f"{first.pk},{stray.id},on the invoice of 2026-10" in report
    assert f"{first.pk},{stray.id},the ledger has it on no invoice" in report
    assert f"{second.pk},,in Stripe 2 times" in report
    assert f"{third.pk},,missing in Stripe" in report
    assert "invoice net differs from its ledger lines" in report  # November's invoice holds the stray second item
    assert report.endswith("differences") and not report.endswith("no differences")


def months_key() -> str:
    from billing.stripe_gateway import MONTH_METADATA

    return MONTH_METADATA
