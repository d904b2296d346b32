"""Reads of billing: what a tenant spent in a month, and what its running orders will cost."""

import datetime as dt
from decimal import Decimal

from django.contrib.postgres.aggregates import ArrayAgg
from django.db.models import Count, Q, Sum

from billing import months, tax
from billing.models import BillingProfile, CreditNote, Invoice, Quote, UsageLine
from marketplace.models import Report

UNFINISHED = [Report.Status.QUEUED, Report.Status.RUNNING]


parse_month = months.parse_month


def current_month(tenant=None) -> dt.date:
    """The billing month of now: a calendar month of BILLING_TIME_ZONE, for every tenant
    (billing/months.py); `tenant` is accepted for callers that name it, and changes nothing."""
    return months.current_month()


current_billing_month = current_month


def month_lines(*, tenant, month: dt.date):
    """The tenant's lines of the billing month: this tenant's only."""
    return UsageLine.objects.filter(months.in_month(month), tenant=tenant)


def month_spent_cents(*, tenant, month: dt.date) -> int:
    """Billed less credited in the tenant's calendar month."""
    return month_lines(tenant=tenant, month=month).aggregate(total=Sum("amount_cents"))["total"] or 0


def _unfinished_quotes(tenant):
    """The quotes of the tenant's queued and running reports: billed when they succeed."""
    return Quote.objects.filter(tenant=tenant, report__status__in=UNFINISHED)


def committed_cents(*, tenant) -> int:
    """What the tenant's queued and running reports will bill when they succeed."""
    return _unfinished_quotes(tenant).aggregate(total=Sum("amount_cents"))["total"] or 0


def month_units(*, tenant, product) -> Decimal:
    """The units of the product the tenant has this calendar month: billed, and in reports
    ordered but not finished, which will be."""
    billed = (
        month_lines(tenant=tenant, month=months.current_month())
        .filter(kind=UsageLine.Kind.USAGE, product=product.code)
        .aggregate(total=Sum("quantity"))["total"]
    )
    ordered = _unfinished_quotes(tenant).filter(product=product.code).aggregate(total=Sum("quantity"))["total"]
    return (billed or Decimal(0)) + (ordered or Decimal(0))


def _sums(lines, *keys: str) -> list[dict]:
    """Lines summed per the keys: reports billed, quantity, and billed, credited (positive)
    and net cents; and the Stripe invoices that hold them, and how many are on none yet."""
    rows = (
        lines.values(*keys)
        .annotate(
            reports=Count("id", filter=Q(kind=UsageLine.Kind.USAGE)),
            quantity=Sum("quantity", filter=Q(kind=UsageLine.Kind.USAGE)),
            billed_cents=Sum("amount_cents", filter=~Q(kind=UsageLine.Kind.CREDIT)),
            credited_cents=Sum("amount_cents", filter=Q(kind=UsageLine.Kind.CREDIT)),
            invoice_ids=ArrayAgg(
                "sync__stripe_invoice_id", distinct=True, filter=~Q(sync__stripe_invoice_id=""), default=[]
            ),
            not_in_stripe=Count("id", filter=Q(sync__isnull=True) | Q(sync__stripe_invoice_id="")),
        )
        .order_by(*keys)
    )
    return [
        {
            **row,
            "quantity": row["quantity"] or Decimal(0),
            "billed_cents": row["billed_cents"] or 0,
            "credited_cents": -(row["credited_cents"] or 0),
            "net_cents": (row["billed_cents"] or 0) + (row["credited_cents"] or 0),
        }
        for row in rows
    ]


def month_usage_by_product(*, tenant, month: dt.date) -> list[dict]:
    """Per product: reports billed, quantity, billed, credited and net cents (one currency per product)."""
    return _sums(month_lines(tenant=tenant, month=month), "product", "unit", "currency")


EXPORT_COLUMNS = [
    "tenant",
    "country",
    "vat_id",
    "vat_treatment",
    "product",
    "unit",
    "currency",
    "reports",
    "quantity",
    "billed",
    "credited",
    "net",
    "vat_rate",
    "vat",
    "gross",
    "stripe_invoices",
    "invoice_numbers",
    "invoice_status",
    "invoice_urls",
    "invoice_pdfs",
    "credit_notes",
    "not_in_stripe",
]


def export_rows(lines) -> list[dict]:
    """Usage lines summed per tenant and product, as finance's export lists them (amounts in
    the currency's units, as Decimal): net, VAT (each line's, rounded to the cent, as Stripe's
    tax rates do) and gross; the Stripe invoices that hold them (ids, numbers, states, pages,
    PDFs), the credit notes of their credits, and how many lines are on no invoice yet."""
    rows = _sums(lines, "tenant__name", "tenant_id", "product", "unit", "currency")
    tenant_ids = {row["tenant_id"] for row in rows}
    profiles = {profile.tenant_id: profile for profile in BillingProfile.objects.filter(tenant_id__in=tenant_ids)}
    treatments = {
        tenant_id: profiles[tenant_id].treatment if tenant_id in profiles else tax.Treatment.DOMESTIC
        for tenant_id in tenant_ids
    }
    vat: dict[tuple, int] = {}
    for tenant_id, product, unit, currency, cents in lines.values_list(
        "tenant_id", "product", "unit", "currency", "amount_cents"
    ):
        key = (tenant_id, product, unit, currency)
        vat[key] = vat.get(key, 0) + tax.vat_cents(cents, tax.rate_of(treatments[tenant_id]))
    invoice_ids = {invoice_id for row in rows for invoice_id in row["invoice_ids"]}
    invoices = {
        invoice.stripe_invoice_id: invoice for invoice in Invoice.objects.filter(stripe_invoice_id__in=invoice_ids)
    }
    notes: dict[tuple, list[str]] = {}
    for note in CreditNote.objects.filter(line__in=lines).select_related("line").order_by("pk"):
        key = (note.line.tenant_id, note.line.product, note.line.unit, note.line.currency)
        notes.setdefault(key, []).append(f"{note.number or note.stripe_credit_note_id or 'pending'}:{note.kind}")
    out = []
    for row in rows:
        key = (row["tenant_id"], row["product"], row["unit"], row["currency"])
        held = [invoices.get(invoice_id) for invoice_id in sorted(row["invoice_ids"])]
        profile = profiles.get(row["tenant_id"])
        treatment = treatments[row["tenant_id"]]
        out.append(
            {
                "tenant": row["tenant__name"],
                "country": profile.country if profile else "",
                "vat_id": profile.vat_id if profile else "",
                "vat_treatment": treatment,
                "product": row["product"],
                "unit": row["unit"],
                "currency": row["currency"],
                "reports": row["reports"],
                "quantity": row["quantity"],
                "billed": _units(row["billed_cents"]),
                "credited": _units(row["credited_cents"]),
                "net": _units(row["net_cents"]),
                "vat_rate": tax.rate_of(treatment),
                "vat": _units(vat.get(key, 0)),
                "gross": _units(row["net_cents"] + vat.get(key, 0)),
                "stripe_invoices": " ".join(sorted(row["invoice_ids"])),
                "invoice_numbers": " ".join(invoice.number or "-" for invoice in held if invoice),
                "invoice_status": " ".join(invoice.status if invoice else "unknown" for invoice in held),
                "invoice_urls": " ".join(invoice.hosted_invoice_url or "-" for invoice in held if invoice),
                "invoice_pdfs": " ".join(invoice.invoice_pdf or "-" for invoice in held if invoice),
                "credit_notes": " ".join(notes.get(key, [])),
                # Lines not yet on a Stripe invoice: waiting in the outbox, or sent and not invoiced yet.
                "not_in_stripe": row["not_in_stripe"],
            }
        )
    return out


def all_lines_in_month(month: dt.date):
    """Every tenant's lines of a billing month."""
    return UsageLine.objects.filter(months.in_month(month))


def _units(cents: int) -> Decimal:
    return (Decimal(cents) / 100).quantize(Decimal("0.01"))


def invoice_list(*, tenant):
    """The tenant's invoices: this tenant's only."""
    return Invoice.objects.filter(tenant=tenant).order_by("-created_at")
