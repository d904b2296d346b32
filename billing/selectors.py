"""Reads of billing: what a tenant spent in a month, and what its running orders will cost."""

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.postgres.aggregates import ArrayAgg
from django.db.models import Count, Q, Sum
from django.utils import timezone

from billing.models import Invoice, Quote, UsageLine, UsageSync
from marketplace.models import Report

UNFINISHED = [Report.Status.QUEUED, Report.Status.RUNNING]


def parse_month(text: str) -> dt.date:
    """The first day of a month given as YYYY-MM; ValueError says what is wrong."""
    try:
        return dt.datetime.strptime(text, "%Y-%m").date()
    except ValueError:
        raise ValueError(f"a month such as 2026-03, got {text!r}") from None


def current_month(tenant) -> dt.date:
    """The first day of this calendar month in the tenant's time zone."""
    return timezone.now().astimezone(ZoneInfo(tenant.time_zone)).date().replace(day=1)


def current_billing_month() -> dt.date:
    """The first day of this calendar month of BILLING_TIME_ZONE (finance's months)."""
    return timezone.now().astimezone(ZoneInfo(settings.BILLING_TIME_ZONE)).date().replace(day=1)


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
        month_lines(tenant=tenant, month=current_month(tenant))
        .filter(kind=UsageLine.Kind.USAGE, product=product.code)
        .aggregate(total=Sum("quantity"))["total"]
    )
    ordered = _unfinished_quotes(tenant).filter(product=product.code).aggregate(total=Sum("quantity"))["total"]
    return (billed or Decimal(0)) + (ordered or Decimal(0))


def usage_lines_due() -> list[int]:
    """Lines waiting for Stripe whose next try is due, oldest first."""
    return list(
        UsageSync.objects.filter(state=UsageSync.State.PENDING, next_attempt_at__lte=timezone.now())
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:500]
    )


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
    the currency's units, as Decimal), with the Stripe invoices that hold them."""
    rows = _sums(lines, "tenant__name", "product", "unit", "currency")
    invoice_ids = {invoice_id for row in rows for invoice_id in row["invoice_ids"]}
    statuses = dict(
        Invoice.objects.filter(stripe_invoice_id__in=invoice_ids).values_list("stripe_invoice_id", "status")
    )
    return [
        {
            "tenant": row["tenant__name"],
            "product": row["product"],
            "unit": row["unit"],
            "currency": row["currency"],
            "reports": row["reports"],
            "quantity": row["quantity"],
            "billed": _units(row["billed_cents"]),
            "credited": _units(row["credited_cents"]),
            "net": _units(row["net_cents"]),
            "stripe_invoices": " ".join(sorted(row["invoice_ids"])),
            "invoice_status": " ".join(
                statuses.get(invoice_id, "unknown") for invoice_id in sorted(row["invoice_ids"])
            ),
            # Lines not yet on a Stripe invoice: waiting in the outbox, or sent and not invoiced yet.
            "not_in_stripe": row["not_in_stripe"],
        }
        for row in rows
    ]


def all_lines_in_month(month: dt.date, time_zone: str | None = None):
    """Every tenant's lines of a month of BILLING_TIME_ZONE (finance's months), or of time_zone."""
    return UsageLine.objects.filter(_in_month(month, time_zone or settings.BILLING_TIME_ZONE))


def _units(cents: int) -> Decimal:
    return (Decimal(cents) / 100).quantize(Decimal("0.01"))


def invoice_list(*, tenant):
    return Invoice.objects.filter(tenant=tenant).order_by("-created_at")
