"""One billing month (a calendar month of BILLING_TIME_ZONE) for tiers, minimums, spending
limits, GET /usage/, the close, exports and reconciliation, whatever the tenant's zone; a
month is closed only once it ended, only for tenants that existed in it, with its own lines."""

import csv
import datetime as dt
import io
from decimal import Decimal
from unittest import mock

import pytest
from django.core.management import call_command

from billing import months, selectors, tax
from billing.closing import minimums_record, month_close_all
from billing.models import Invoice, MonthClose, Price, PriceTier, UsageLine, UsageSync
from billing.services import usage_record
from billing.sync import usage_sync
from marketplace.exceptions import ServiceError
from marketplace.models import Report, Role, Tenant
from tests.billing import clock
from tests.factories import BILLED_ORDER, granted_tenant

ORDER = BILLED_ORDER
UTC = dt.UTC
# 23:30 UTC on 30 November: 00:30 on 1 December in Berlin (the billing zone), 18:30 on
# 30 November in New York (the tenant's zone).
EDGE = dt.datetime(2026, 11, 30, 23, 30, tzinfo=UTC)
NOVEMBER, DECEMBER = dt.date(2026, 11, 1), dt.date(2026, 12, 1)


@pytest.fixture(autouse=True)
def loaded(city):
    """The synthetic block's data, which the orders read."""


def ordered(client, name: str = "r") -> Report:
    """A queued report (its task does not run here: the test writes its line when it wants)."""
    response = client.post("/api/v1/reports/", {**ORDER, "name": name}, format="json")
    assert response.status_code == 201, response.content
    return Report.objects.get(pk=response.json()["id"])


def billed_at(report: Report, instant: dt.datetime) -> UsageLine:
    """The report's line, written at `instant`, as when it succeeds."""
    Report.objects.filter(pk=report.pk).update(status=Report.Status.SUCCEEDED)
    with mock.patch("django.utils.timezone.now", return_value=instant):
        return usage_record(report=report)


def existing_since(tenant: Tenant, instant: dt.datetime) -> Tenant:
    Tenant.objects.filter(pk=tenant.pk).update(created_at=instant)
    tenant.refresh_from_db()
    return tenant


def test_a_tenant_in_another_zone_is_billed_in_the_billing_month(api, tenant, client_for):
    report = ordered(api)
    Tenant.objects.filter(pk=tenant.pk).update(time_zone="America/New_York")
    existing_since(tenant, dt.datetime(2026, 10, 1, tzinfo=UTC))
    Price.objects.create(
        product=Price.objects.get(product__code="footfall", tenant=None).product,
        tenant=tenant,
        unit="cell_day",
        unit_price=Decimal("0.002"),
        monthly_minimum_cents=100,
    )
    line = billed_at(report, EDGE)  # New York's 30 November, Berlin's 1 December

    assert months.line_month(line) == DECEMBER
    assert list(selectors.month_lines(tenant=tenant, month=DECEMBER)) == [line]
    assert not selectors.month_lines(tenant=tenant, month=NOVEMBER).exists()
    with clock.at(EDGE + dt.timedelta(minutes=5)):
        # The spending limit and the tiers count the billing month's lines.
        assert selectors.month_spent_cents(tenant=tenant, month=selectors.current_month(tenant)) == 6
        assert selectors.month_units(tenant=tenant, product=line.report.product) == Decimal(32)
        usage = client_for(tenant, Role.FINANCE).get("/api/v1/usage/").json()
        assert (usage["period"], usage["time_zone"], usage["products"][0]["net"]) == (
            "2026-12",
            "Europe/Berlin",
            "0.06",
        )
    # November's minimum is the whole minimum: the line is December's.
    [minimum] = minimums_record(month=NOVEMBER)
    assert (minimum.month, minimum.amount_cents) == (NOVEMBER, 100)
    november = list(csv.DictReader(io.StringIO(export("2026-11"))))
    assert [(row["tenant"], row["billed"]) for row in november] == [(tenant.name, "1.00")]


def test_a_month_before_the_tenant_existed_gets_no_minimum(api, tenant):
    existing_since(tenant, dt.datetime(2026, 11, 20, 9, tzinfo=UTC))
    Price.objects.create(
        product=Price.objects.get(product__code="footfall", tenant=None).product,
        tenant=tenant,
        unit="cell_day",
        unit_price=Decimal("0.002"),
        monthly_minimum_cents=100,
    )

    assert month_close_all(month=dt.date(2026, 10, 1)).minimums == []
    assert [line.month for line in month_close_all(month=NOVEMBER).minimums] == [NOVEMBER]  # it existed then
    assert UsageLine.objects.filter(kind="minimum").count() == 1


def test_a_month_is_closed_only_once_it_has_ended(db):
    with pytest.raises(ServiceError, match="has not ended"):
        month_close_all(month=months.current_month())
    with clock.at(dt.datetime(2026, 11, 30, 22, 59, tzinfo=UTC)), pytest.raises(ServiceError):
        month_close_all(month=NOVEMBER)  # 23:59 in Berlin
    with clock.at(dt.datetime(2026, 11, 30, 23, 0, tzinfo=UTC)):
        month_close_all(month=NOVEMBER)  # midnight in Berlin


def test_closing_november_on_1_december_invoices_novembers_lines_only(api, tenant, fake_stripe):
    existing_since(tenant, dt.datetime(2026, 10, 1, tzinfo=UTC))
    november_line = billed_at(ordered(api, "nov"), dt.datetime(2026, 11, 20, 12, tzinfo=UTC))
    assert usage_sync(line_id=november_line.pk) == "synced"
    december_line = billed_at(ordered(api, "dec"), EDGE)  # before November is closed

    assert usage_sync(line_id=december_line.pk) == "held"  # it waits for November's invoice
    assert "waits for 2026-11" in UsageSync.objects.get(pk=december_line.pk).last_error
    with clock.at(EDGE + dt.timedelta(hours=5)):
        closed = month_close_all(month=NOVEMBER)

    [(_, invoice, error)] = closed.invoices
    assert error == "" and invoice.month == NOVEMBER
    assert (invoice.subtotal_cents, invoice.tax_cents) == (6, 1)
    assert UsageSync.objects.get(pk=november_line.pk).stripe_invoice_id == invoice.stripe_invoice_id
    december = UsageSync.objects.get(pk=december_line.pk)
    assert (december.state, december.stripe_invoice_id) == ("synced", "")  # sent after the invoice: pending
    assert MonthClose.objects.get(tenant=tenant, month=NOVEMBER).invoice == invoice
    assert reconcile("2026-11").endswith("2026-11: no differences")


def test_half_a_cent_rounds_up(api):
    footfall = Price.objects.get(product__code="footfall", tenant=None)
    PriceTier.objects.create(price=footfall, from_quantity=31, unit_price=Decimal("0.003"))
    # 32 cell-days: 31 at 0.002 and 1 at 0.003: 0.065 EUR, half a cent.
    assert api.post("/api/v1/quotes/", ORDER, format="json").json()["amount"] == "0.07"
    # VAT of each line: 19 % of 0.50 is 0.095 -> 0.10; of a 0.50 credit -0.10.
    assert (tax.vat_cents(50, Decimal(19)), tax.vat_cents(-50, Decimal(19))) == (10, -10)
    assert tax.vat_cents(6, Decimal(19)) == 1  # 1.14 cents


def test_billing_reads_of_one_organisation_exclude_anothers(api, tenant, client_for):
    other = granted_tenant()
    mine = billed_at(ordered(api), EDGE)
    theirs = billed_at(ordered(client_for(other), "theirs"), EDGE)
    for owner, lines in ((tenant, [mine]), (other, [theirs])):
        Invoice.objects.create(
            stripe_invoice_id=f"in_{owner.pk}",
            tenant=owner,
            status="open",
            currency="EUR",
            amount_due_cents=6,
            created_at=EDGE,
        )
        assert list(selectors.month_lines(tenant=owner, month=DECEMBER)) == lines
        assert [row["reports"] for row in selectors.month_usage_by_product(tenant=owner, month=DECEMBER)] == [1]
        assert [invoice.stripe_invoice_id for invoice in selectors.invoice_list(tenant=owner)] == [f"in_{owner.pk}"]
        listed = client_for(owner, Role.FINANCE).get("/api/v1/invoices/").json()["results"]
        assert [row["id"] for row in listed] == [f"in_{owner.pk}"]


def export(month: str) -> str:
    out = io.StringIO()
    call_command("billing_export", "--month", month, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def reconcile(month: str) -> str:
    out = io.StringIO()
    call_command("billing_reconcile", "--month", month, stdout=out, stderr=io.StringIO())
    return out.getvalue().strip()
