"""Closing a billing month (billing/months.py): only once it has ended; minimums only for
tenants that existed in it; each tenant's invoice holds that month's lines only (a later
month's lines wait in the outbox until it is made: billing/sync.py). One tenant's failure
is recorded and the others are invoiced."""

import datetime as dt
import logging
from dataclasses import dataclass, field
from decimal import Decimal

from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from billing import months, stripe_gateway
from billing.invoices import invoice_mirror
from billing.models import Invoice, MonthClose, Price, StripeAccount, UsageLine, UsageSync
from billing.selectors import all_lines_in_month, month_lines
from billing.sync import usage_sync
from marketplace.exceptions import ServiceError

logger = logging.getLogger(__name__)
UNSENT = [UsageSync.State.PENDING, UsageSync.State.SENDING]


def _month(month: dt.date | str) -> dt.date:
    return months.parse_month(month) if isinstance(month, str) else month.replace(day=1)


def _ended(month: dt.date) -> None:
    if not months.has_ended(month):
        raise ServiceError(
            f"{month:%Y-%m} has not ended yet (billing months are months of the seller's time zone);"
            " a month is closed after it",
            code="month_not_ended",
        )


def minimums_record(*, month: dt.date) -> list[UsageLine]:
    """For each tenant's plan with a monthly minimum, a line topping the billing month up to
    it where it was billed less, net of credits; only for tenants that existed in the month;
    once per tenant, product and month (closing a month again adds nothing)."""
    from billing.services import _outbox  # the ledger's writer queues the line

    first = month.replace(day=1)
    lines = []
    plans = Price.objects.filter(tenant__isnull=False, monthly_minimum_cents__isnull=False).select_related(
        "tenant", "product"
    )
    for price in plans:
        if not months.existed_in(price.tenant, first):
            continue
        billed = (
            month_lines(tenant=price.tenant, month=first)
            .filter(product=price.product.code)
            .aggregate(total=Sum("amount_cents"))["total"]
            or 0
        )
        if billed >= price.monthly_minimum_cents:
            continue
        with transaction.atomic():
            line, created = UsageLine.objects.get_or_create(
                tenant=price.tenant,
                product=price.product.code,
                month=first,
                kind=UsageLine.Kind.MINIMUM,
                defaults={
                    "quantity": Decimal(0),
                    "unit": price.unit,
                    "unit_price": Decimal(0),
                    "amount_cents": price.monthly_minimum_cents - billed,
                    "currency": price.currency,
                    "reason": f"monthly minimum {price.monthly_minimum_cents / 100:.2f}, billed {billed / 100:.2f}",
                },
            )
            if created:
                _outbox(line)
        lines.append(line)
    return lines


@dataclass
class MonthClosed:
    minimums: list[UsageLine]  # the month's top-ups to plans' minimums
    invoices: list[tuple] = field(default_factory=list)  # (tenant, its invoice or None, error or "")


def month_close_all(*, month: dt.date | str) -> MonthClosed:
    """Close an ended billing month: top plans up to their monthly minimums, send what still
    waits of it, then invoice each tenant that existed in it and try to collect. A tenant
    whose invoicing fails is listed with its error (run the close again); the rest go on.
    Safe to run again: no second top-up, no second invoice for the same lines."""
    month = _month(month)
    _ended(month)
    closed = MonthClosed(minimums=minimums_record(month=month))
    for line_id in all_lines_in_month(month).filter(sync__state__in=UNSENT).values_list("pk", flat=True):
        usage_sync(line_id=line_id)  # records its own failure
    for account in StripeAccount.objects.select_related("tenant").order_by("tenant__name"):
        if not months.existed_in(account.tenant, month):
            continue
        try:
            closed.invoices.append((account.tenant, month_close(tenant=account.tenant, month=month), ""))
        except (stripe_gateway.StripeFailed, ServiceError) as error:
            _close_failed(account.tenant, month, str(error))
            closed.invoices.append((account.tenant, None, str(error)))
    return closed


def month_close(*, tenant, month: dt.date | str) -> Invoice | None:
    """Invoice the tenant's sent, not yet invoiced lines of the ended month (pending items of
    its subscription in Stripe) and try to collect; the invoice as mirrored here. None if the
    tenant has no Stripe customer or nothing to invoice. Refused (ServiceError) while lines of
    the month are not sent yet: they would miss the invoice."""
    month = _month(month)
    _ended(month)
    account = StripeAccount.objects.filter(tenant=tenant).first()
    if account is None:
        return None
    lines = month_lines(tenant=tenant, month=month)
    unsent = lines.filter(sync__state__in=UNSENT).count()
    if unsent:
        raise ServiceError(
            f"{unsent} line(s) of {month:%Y-%m} are not in Stripe yet; see their sync errors", code="lines_not_sent"
        )
    to_invoice = list(
        lines.filter(sync__state=UsageSync.State.SYNCED, sync__stripe_invoice_id="").values_list("pk", flat=True)
    )
    invoice = None
    if to_invoice:
        stripe_invoice = stripe_gateway.invoice_close(
            customer_id=account.customer_id,
            subscription_id=account.subscription_id,
            month=f"{month:%Y-%m}",
            line_ids=to_invoice,
        )
        invoice = invoice_mirror(invoice=stripe_invoice, tenant=tenant, changed=stripe_invoice.get("created", 0))
        if invoice.month != month:
            Invoice.objects.filter(pk=invoice.pk).update(month=month)
            invoice.month = month
    previous = MonthClose.objects.filter(tenant=tenant, month=month).first()
    MonthClose.objects.update_or_create(
        tenant=tenant,
        month=month,
        defaults={
            "closed_at": timezone.now(),
            "invoice": invoice or (previous.invoice if previous else None),
            "error": "",
        },
    )
    _release_held(tenant)
    return invoice


def _close_failed(tenant, month: dt.date, error: str) -> None:
    logger.warning("closing %s for %s failed: %s", f"{month:%Y-%m}", tenant, error)
    MonthClose.objects.update_or_create(tenant=tenant, month=month, defaults={"error": error[:2000]})


def _release_held(tenant) -> None:
    """Lines of later months that waited for this invoice go now."""
    for line_id in UsageSync.objects.filter(line__tenant=tenant, state=UsageSync.State.PENDING).values_list(
        "pk", flat=True
    ):
        usage_sync(line_id=line_id)
