"""The gateway against Stripe's current API (the pinned library's version), where localstripe
differs: Prices, invoice items on the subscription, invoices that include pending items,
invoice lines whose item is under `parent`, paged lines, credit notes, idempotency keys. The
answers are JSON files in the real API's shapes (tests/billing/stripe_shapes/), written from
Stripe's API reference, not captured from a live account; the requests are checked as sent."""

import json
import urllib.parse
from pathlib import Path

import pytest
import stripe

from billing import stripe_gateway, tax
from billing.credit_notes import credit_note_send
from billing.invoices import invoice_mirror
from billing.models import CreditNote, Invoice, UsageLine, UsageSync
from billing.selectors import export_rows

SHAPES = Path(__file__).parent / "stripe_shapes"


def shape(name: str) -> dict:
    return json.loads((SHAPES / f"{name}.json").read_text())


class Recorded(stripe.HTTPClient):
    """Answers each call with the first route whose method and path prefix match; keeps the calls."""

    name = "recorded"

    def __init__(self, routes: list[tuple[str, str, str]]):
        super().__init__()
        self.routes = routes
        self.calls: list[dict] = []

    def request(self, method, url, headers, post_data=None, *, _usage=None):
        parsed = urllib.parse.urlsplit(url)
        body = post_data.decode() if isinstance(post_data, bytes) else (post_data or "")
        self.calls.append(
            {
                "method": method.upper(),
                "path": parsed.path,
                "params": dict(urllib.parse.parse_qsl(body or parsed.query)),
                "key": (headers or {}).get("Idempotency-Key"),
                "version": (headers or {}).get("Stripe-Version"),
            }
        )
        for route_method, prefix, name in self.routes:
            if (
                method.upper() == route_method
                and parsed.path.startswith(prefix.split("#")[0])
                and _query_fits(prefix, parsed)
            ):
                return json.dumps(shape(name)), 200, {"Request-Id": "req_recorded"}
        return json.dumps({"error": {"type": "invalid_request_error", "message": f"no route {url}"}}), 404, {}

    def close(self):
        pass

    def sent(self, method: str, path: str) -> list[dict]:
        return [call for call in self.calls if call["method"] == method and call["path"] == path]


def _query_fits(prefix: str, parsed) -> bool:
    if "starting_after" in parsed.query:
        return prefix.endswith("#page2")
    return not prefix.endswith("#page2")


@pytest.fixture
def recorded(settings, monkeypatch):
    settings.STRIPE_SECRET_KEY = "sk_test_recorded"
    settings.STRIPE_API_BASE = "https://api.stripe.com"
    settings.STRIPE_LOCALSTRIPE = False

    def install(routes):
        client = Recorded(routes)
        monkeypatch.setattr(stripe_gateway, "_http_client", lambda: client)
        return client

    return install


def test_customers_subscribe_to_a_price_not_a_legacy_plan(recorded):
    http = recorded(
        [
            ("GET", "/v1/prices", "prices_empty"),
            ("POST", "/v1/prices", "price"),
            ("POST", "/v1/customers", "customer"),
            ("POST", "/v1/subscriptions", "subscription"),
        ]
    )

    assert stripe_gateway.customer_create(tenant_id=7, name="Beispiel", profile={"email": "finance@example.at"}) == (
        "cus_RealShape01",
        "sub_1RealShape01",
    )

    [price] = http.sent("POST", "/v1/prices")
    assert (price["params"]["lookup_key"], price["params"]["recurring[interval]"]) == ("footfall-reports", "month")
    [subscription] = http.sent("POST", "/v1/subscriptions")
    assert subscription["params"]["items[0][price]"] == "price_1RealShape0"
    assert not [call for call in http.calls if "/plans" in call["path"]]
    assert {call["version"] for call in http.calls} == {stripe.api_version}


def test_invoice_items_go_on_the_subscription_with_their_tax_rate(recorded):
    http = recorded([("POST", "/v1/invoiceitems", "invoice_item")])

    item = stripe_gateway.invoice_item_create(
        customer_id="cus_RealShape01",
        subscription_id="sub_1RealShape01",
        line_id=100,
        month="2026-11",
        amount_cents=600,
        currency="EUR",
        description="footfall report r0",
        tax_rate_id="txr_1RealShape00",
    )

    assert item == "ii_1RealShape00"
    [sent] = http.calls
    assert sent["params"]["subscription"] == "sub_1RealShape01"
    assert sent["params"]["tax_rates[0]"] == "txr_1RealShape00"
    assert sent["params"]["metadata[usage_line_id]"] == "100" and sent["params"]["metadata[billing_month]"] == "2026-11"
    assert sent["key"].startswith("usage-line-100-")


def test_the_months_invoice_includes_pending_items_and_is_read_with_all_its_lines(recorded, tenant):
    http = recorded(
        [
            ("POST", "/v1/invoices/in_1RealShape01/pay", "invoice_paid"),
            ("POST", "/v1/invoices", "invoice_draft"),
            ("GET", "/v1/invoices/in_1RealShape01/lines#page2", "invoice_lines_page2"),
            ("GET", "/v1/invoices/in_1RealShape01/lines", "invoice_lines_page1"),
        ]
    )

    invoice = stripe_gateway.invoice_close(
        customer_id="cus_RealShape01", subscription_id="sub_1RealShape01", month="2026-11", line_ids=[100, 101]
    )

    [created] = http.sent("POST", "/v1/invoices")
    assert created["params"]["pending_invoice_items_behavior"] == "include"
    assert created["params"]["subscription"] == "sub_1RealShape01"
    assert len(invoice["lines"]["data"]) == 12 and not invoice["lines"]["has_more"]  # 10 embedded, then paged
    assert stripe_gateway.line_usage(invoice["lines"]["data"][11]) == ("111", "ii_1RealShape11")
    # The mirror reads what the current API gives: number, page, PDF, VAT under total_taxes.
    local = invoice_mirror(invoice=invoice, tenant=tenant, changed=invoice["created"])
    assert (local.number, local.status, local.subtotal_cents, local.tax_cents, local.amount_due_cents) == (
        "FOOT-0042",
        "paid",
        7200,
        1368,
        8568,
    )
    assert local.hosted_invoice_url.startswith("https://invoice.stripe.com/")
    assert local.invoice_pdf.startswith("https://pay.stripe.com/invoice/")


def test_a_second_close_with_other_lines_uses_another_idempotency_key(recorded):
    http = recorded(
        [
            ("POST", "/v1/invoices/in_1RealShape01/pay", "invoice_paid"),
            ("POST", "/v1/invoices", "invoice_draft"),
            ("GET", "/v1/invoices/in_1RealShape01/lines#page2", "invoice_lines_page2"),
            ("GET", "/v1/invoices/in_1RealShape01/lines", "invoice_lines_page1"),
        ]
    )
    close = dict(customer_id="cus_RealShape01", subscription_id="sub_1RealShape01", month="2026-11")

    stripe_gateway.invoice_close(**close, line_ids=[100, 101])
    stripe_gateway.invoice_close(**close, line_ids=[100, 101])  # a retry: the same call
    stripe_gateway.invoice_close(**close, line_ids=[102])  # a line sent late, within 24 hours

    first, retry, late = (call["key"] for call in http.sent("POST", "/v1/invoices"))
    assert first == retry and late != first


def test_a_credit_on_a_paid_invoice_is_a_refunding_credit_note(recorded, api, tenant, city):
    from tests.factories import BILLED_ORDER

    http = recorded(
        [
            ("GET", "/v1/credit_notes/preview", "credit_note_preview"),
            ("POST", "/v1/credit_notes", "credit_note"),
            ("GET", "/v1/tax_rates", "tax_rates"),
        ]
    )
    report_id = api.post("/api/v1/reports/", BILLED_ORDER, format="json").json()["id"]
    tax.profile_set(tenant=tenant, country="AT", vat_id="ATU 1234 5678", email="finance@example.at")  # reverse charge
    usage = UsageLine.objects.create(
        tenant=tenant, report_id=report_id, kind="usage", product="footfall", quantity=32, unit="cell_day",
        unit_price="0.002", amount_cents=600, currency="EUR",
    )  # fmt: skip
    invoice = Invoice.objects.create(
        stripe_invoice_id="in_1RealShape01", tenant=tenant, status="paid", currency="EUR", amount_due_cents=8568,
        created_at="2026-12-01T06:00:00Z",
    )  # fmt: skip
    UsageSync.objects.create(line=usage, state="synced", stripe_invoice_id=invoice.stripe_invoice_id)
    credit = UsageLine.objects.create(
        tenant=tenant, report_id=report_id, kind="credit", product="footfall", quantity=0, unit="cell_day",
        unit_price="0.002", amount_cents=-200, currency="EUR", reason="late delivery",
    )  # fmt: skip
    UsageSync.objects.create(line=credit)

    note = credit_note_send(line=credit, invoice=invoice)

    [sent] = http.sent("POST", "/v1/credit_notes")
    assert sent["params"]["invoice"] == "in_1RealShape01"
    assert sent["params"]["lines[0][type]"] == "custom_line_item" and sent["params"]["lines[0][unit_amount]"] == "200"
    assert sent["params"]["refund_amount"] == "238"  # gross, as Stripe's preview computed it
    assert (note.kind, note.amount_cents, note.number) == (CreditNote.Kind.REFUND, 200, "FOOT-0042-CN-01")
    assert UsageSync.objects.get(pk=credit.pk).stripe_invoice_id == "in_1RealShape01"
    [row] = export_rows(UsageLine.objects.filter(tenant=tenant))
    assert (row["credit_notes"], row["vat_treatment"], row["vat_id"]) == (
        "FOOT-0042-CN-01:refund",
        "reverse_charge",
        "ATU12345678",
    )
