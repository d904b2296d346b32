"""Finance's export of a month matches the ledger to the cent, as CSV and XLSX, from the command and the admin."""

import csv
import datetime as dt
import io
from decimal import Decimal
from unittest import mock

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.core.management.base import CommandError
from openpyxl import load_workbook

from billing.models import UsageLine
from billing.selectors import EXPORT_COLUMNS
from billing.services import credit_issue, usage_record
from marketplace.models import Report
from marketplace.staff import ACCOUNT_MANAGERS
from tests.factories import BILLED_ORDER, granted_tenant

ORDER = BILLED_ORDER
MARCH, APRIL = dt.datetime(2026, 3, 15, 12, tzinfo=dt.UTC), dt.datetime(2026, 4, 1, 12, tzinfo=dt.UTC)


@pytest.fixture
def ledger(api, tenant, city):
    """Two March reports of the tenant (one credited 2 cents) and one April report, billed
    as succeeded reports are (their tasks do not run here)."""
    for name in ("a", "b", "c"):
        assert api.post("/api/v1/reports/", {**ORDER, "name": name}, format="json").status_code == 201
    first, second, third = Report.objects.order_by("created_at")
    with mock.patch("django.utils.timezone.now", return_value=MARCH):
        usage_record(report=first)
        usage_record(report=second)
        credit_issue(report=first, amount_cents=2, reason="late", by=None)
    with mock.patch("django.utils.timezone.now", return_value=APRIL):
        usage_record(report=third)
    return tenant


MARCH_ROW = {
    "country": "",
    "vat_id": "",
    "vat_treatment": "domestic",
    "product": "footfall",
    "unit": "cell_day",
    "currency": "EUR",
    "reports": "2",
    "quantity": "64.00",
    "billed": "0.12",
    "credited": "0.02",
    "net": "0.10",
    # VAT per line, rounded to the cent: 6 x 19 % = 1.14 -> 1 (twice), -2 x 19 % = -0.38 -> 0.
    "vat_rate": "19.00",
    "vat": "0.02",
    "gross": "0.12",
    "stripe_invoices": "",  # Stripe is not configured here: tests/billing/test_stripe.py has them
    "invoice_numbers": "",
    "invoice_status": "",
    "invoice_urls": "",
    "invoice_pdfs": "",
    "credit_notes": "",
    "not_in_stripe": "3",
}


def run(*args) -> str:
    out = io.StringIO()
    call_command("billing_export", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_the_csv_export_of_a_month_sums_the_ledger_per_tenant_and_product(ledger):
    rows = list(csv.DictReader(io.StringIO(run("--month", "2026-03"))))

    assert rows == [{"tenant": ledger.name, **MARCH_ROW}]
    assert sum(Decimal(row["net"]) for row in rows) * 100 == sum(
        line.amount_cents for line in UsageLine.objects.filter(created_at__month=3)
    )


def test_the_xlsx_export_holds_the_same_numbers(ledger, tmp_path):
    run("--month", "2026-04", "--out", str(tmp_path / "april.xlsx"))

    sheet = load_workbook(tmp_path / "april.xlsx").active
    header, *rows = [list(row) for row in sheet.iter_rows(values_only=True)]
    assert header == EXPORT_COLUMNS
    assert rows == [
        [ledger.name, None, None, "domestic", "footfall", "cell_day", "EUR", 1, 32, 0.06, 0, 0.06, 19, 0.01, 0.07]
        + [None] * 6
        + [1]
    ]


def test_a_bad_month_is_refused(db):
    with pytest.raises(CommandError, match="2026-03"):
        run("--month", "March")


def test_an_account_manager_exports_the_selected_lines_from_the_admin(ledger, client):
    granted_tenant()  # another tenant without lines: not in the export
    manager = User.objects.create_user("fin", password="not-used", is_staff=True)
    manager.groups.add(Group.objects.get(name=ACCOUNT_MANAGERS))
    client.force_login(manager)
    march = UsageLine.objects.filter(created_at__month=3).values_list("pk", flat=True)

    response = client.post(
        "/admin/billing/usageline/", {"action": "download_csv", "_selected_action": [str(pk) for pk in march]}
    )

    assert response.status_code == 200 and response["Content-Type"] == "text/csv"
    assert list(csv.DictReader(io.StringIO(response.content.decode()))) == [{"tenant": ledger.name, **MARCH_ROW}]
