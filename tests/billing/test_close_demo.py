"""A month closed for two tenants in different zones, end to end against localstripe: the
close, the export with its VAT columns, and the reconciliation, through the management
commands (BILLING_DEMO_OUT=FILE keeps their outputs)."""

import datetime as dt
import io
import os
from decimal import Decimal

from django.core.management import call_command

from billing import tax
from billing.models import Invoice, Price, UsageSync
from billing.sync import usage_sync_due
from marketplace.models import Role, Tenant
from tests.billing import clock
from tests.billing.test_months import EDGE, billed_at, existing_since, ordered
from tests.factories import granted_tenant

UTC = dt.UTC


def run(command: str, *args) -> str:
    out = io.StringIO()
    call_command(command, *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_november_closed_for_a_berlin_and_a_new_york_tenant(api, tenant, client_for, city, fake_stripe):
    berlin = tenant
    Tenant.objects.filter(pk=berlin.pk).update(name="Berlin Handel GmbH")
    new_york = granted_tenant(name="Wien Retail GmbH (New York office)")
    nyc_api = client_for(new_york)
    reports = {
        "berlin": [ordered(api, f"b{i}") for i in range(3)],
        "new_york": [ordered(nyc_api, f"n{i}") for i in range(3)],
    }
    Tenant.objects.filter(pk=new_york.pk).update(time_zone="America/New_York")
    for each in (berlin, new_york):
        existing_since(each, dt.datetime(2026, 10, 15, tzinfo=UTC))
    tax.profile_set(tenant=berlin, country="DE", vat_id="DE123456789", email="buchhaltung@berlin.example")
    tax.profile_set(tenant=new_york, country="AT", vat_id="ATU12345678", email="finance@wien.example")
    footfall = Price.objects.get(product__code="footfall", tenant=None).product
    Price.objects.create(  # a plan with a monthly minimum (its reports were ordered, and priced, before it)
        product=footfall, tenant=new_york, unit="cell_day", unit_price=Decimal("0.0325"), monthly_minimum_cents=500
    )
    november = dt.datetime(2026, 11, 10, 12, tzinfo=UTC)
    billed_at(reports["berlin"][0], november)
    billed_at(reports["berlin"][1], dt.datetime(2026, 11, 30, 22, 30, tzinfo=UTC))  # 23:30 in Berlin: November
    billed_at(reports["new_york"][0], november)
    billed_at(reports["new_york"][1], EDGE)  # 18:30 on 30 Nov in New York; Berlin's December: December's
    billed_at(reports["berlin"][2], EDGE)  # December too
    usage_sync_due()  # the sweep: November's lines go; December's wait for November's invoice

    with clock.after("2026-11", minutes=6 * 60):  # the beat's 1 December, 06:00
        closed = run("billing_close_month", "--month", "2026-11")
        export = run("billing_export", "--month", "2026-11")
        reconciled = run("billing_reconcile", "--month", "2026-11")
    december_waiting = UsageSync.objects.filter(stripe_invoice_id="", state="synced").count()
    invoices = client_for(new_york, Role.FINANCE).get("/api/v1/invoices/").json()["results"]

    if os.environ.get("BILLING_DEMO_OUT"):
        with open(os.environ["BILLING_DEMO_OUT"], "w") as out:
            out.write(f"$ billing_close_month --month 2026-11\n{closed}\n$ billing_export --month 2026-11\n{export}\n")
            out.write(f"$ billing_reconcile --month 2026-11\n{reconciled}\n")
            out.write(f"December lines sent after November's invoice, pending in Stripe: {december_waiting}\n")
            out.write(f"GET /api/v1/invoices/ (Wien Retail's finance): {invoices}\n")
    assert reconciled.strip().endswith("2026-11: no differences")
    assert december_waiting == 2
    berlin_invoice, nyc_invoice = (
        Invoice.objects.get(tenant=each, month=dt.date(2026, 11, 1)) for each in (berlin, new_york)
    )
    # Berlin: 2 x 0.06 net, 19 % VAT per line (0.01 each). New York: 0.06 and a top-up to 5.00, reverse charged.
    assert (berlin_invoice.subtotal_cents, berlin_invoice.tax_cents, berlin_invoice.amount_due_cents) == (12, 2, 14)
    assert (nyc_invoice.subtotal_cents, nyc_invoice.tax_cents, nyc_invoice.amount_due_cents) == (500, 0, 500)
    assert ",reverse_charge," in export and ",0.00,0.00,5.00," in export and ",19.00,0.02,0.14," in export
