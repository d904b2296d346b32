"""Reads of billing: what a tenant spent in a month, and what its running orders will cost."""

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.db.models import Count, Q, Sum

from billing.models import Invoice, Quote, UsageLine


def month_bounds(month: dt.date, time_zone: str) -> tuple[dt.datetime, dt.datetime]:
    """The instants that start the month of `month` and the next, in the time zone."""
    zone = ZoneInfo(time_zone)
    first = month.replace(day=1)
    following = (first + dt.timedelta(days=32)).replace(day=1)
    return (
        dt.datetime.combine(first, dt.time(), tzinfo=zone),
        dt.datetime.combine(following, dt.time(), tzinfo=zone),
    )


def month_lines(*, tenant, month: dt.date):
    return UsageLine.objects.filter(_in_month(month, tenant.time_zone), tenant=tenant)


def _in_month(month: dt.date, time_zone: str) -> Q:
    """Lines of the month: written in it, or a minimum for it (written when the month is closed, after it)."""
    start, end = month_bounds(month, time_zone)
    written = Q(created_at__gte=start, created_at__lt=end) & ~Q(kind=UsageLine.Kind.MINIMUM)
    return written | Q(kind=UsageLine.Kind.MINIMUM, month=month.replace(day=1))


def month_spent_cents(*, tenant, month: dt.date) -> int:
    """Billed less credited in the tenant's calendar month."""
    return month_lines(tenant=tenant, month=month).aggregate(total=Sum("amount_cents"))["total"] or 0


def committed_cents(*, tenant) -> int:
    """What the tenant's queued and running reports will bill when they succeed."""
    return (
        Quote.objects.filter(tenant=tenant, report__status__in=["queued", "running"]).aggregate(
            total=Sum("amount_cents")
        )["total"]
        or 0
    )


def month_usage_by_product(*, tenant, month: dt.date) -> list[dict]:
    """Per product: reports billed, quantity, billed, credited and net cents (one currency per product)."""
    rows = (
        month_lines(tenant=tenant, month=month)
        .values("product", "unit", "currency")
        .annotate(
            reports=Count("id", filter=Q(kind=UsageLine.Kind.USAGE)),
            quantity=Sum("quantity", filter=Q(kind=UsageLine.Kind.USAGE)),
            billed_cents=Sum("amount_cents", filter=~Q(kind=UsageLine.Kind.CREDIT)),
            credited_cents=Sum("amount_cents", filter=Q(kind=UsageLine.Kind.CREDIT)),
        )
        .order_by("product")
    )
    return [
        {
            **row,
            "quantity": row["quantity"] or 0,
            "billed_cents": row["billed_cents"] or 0,
            "credited_cents": -(row["credited_cents"] or 0),
            "net_cents": (row["billed_cents"] or 0) + (row["credited_cents"] or 0),
        }
        for row in rows
    ]


EXPORT_COLUMNS = [
    "tenant",
    "product",
    "unit",
    "currency",
    "reports",
    "quantity",
    "billed",
    "credited",
    "net",
    "stripe_invoices",
    "invoice_status",
    "not_in_stripe",
]


def export_rows(lines) -> list[dict]:
    """Usage lines summed per tenant and product, as finance's export lists them (amounts in
    the currency's units, as Decimal)."""
    rows = (
        lines.values("tenant__name", "product", "unit", "currency")
        .annotate(
            reports=Count("id", filter=Q(kind=UsageLine.Kind.USAGE)),
            quantity=Sum("quantity", filter=Q(kind=UsageLine.Kind.USAGE)),
            billed_cents=Sum("amount_cents", filter=~Q(kind=UsageLine.Kind.CREDIT)),
            credited_cents=Sum("amount_cents", filter=Q(kind=UsageLine.Kind.CREDIT)),
        )
        .order_by("tenant__name", "product")
    )
    exported = []
    for row in rows:
        of_row = lines.filter(tenant__name=row["tenant__name"], product=row["product"], unit=row["unit"])
        invoice_ids = sorted(
            set(of_row.exclude(sync__stripe_invoice_id="").values_list("sync__stripe_invoice_id", flat=True))
        )
        statuses = dict(
            Invoice.objects.filter(stripe_invoice_id__in=invoice_ids).values_list("stripe_invoice_id", "status")
        )
        exported.append(
            {
                "tenant": row["tenant__name"],
                "product": row["product"],
                "unit": row["unit"],
                "currency": row["currency"],
                "reports": row["reports"],
                "quantity": row["quantity"] or Decimal(0),
                "billed": _units(row["billed_cents"] or 0),
                "credited": _units(-(row["credited_cents"] or 0)),
                "net": _units((row["billed_cents"] or 0) + (row["credited_cents"] or 0)),
                "stripe_invoices": " ".join(invoice_ids),
                "invoice_status": " ".join(statuses.get(invoice_id, "unknown") for invoice_id in invoice_ids),
                # Lines not yet on a Stripe invoice: waiting in the outbox, or sent and not invoiced yet.
                "not_in_stripe": of_row.filter(Q(sync__isnull=True) | Q(sync__stripe_invoice_id="")).count(),
            }
        )
    return exported


def all_lines_in_month(month: dt.date, time_zone: str):
    return UsageLine.objects.filter(_in_month(month, time_zone))


def _units(cents: int) -> Decimal:
    return (Decimal(cents) / 100).quantize(Decimal("0.01"))


def invoice_list(*, tenant):
    return Invoice.objects.filter(tenant=tenant).order_by("-created_at")
