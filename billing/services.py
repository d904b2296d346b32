"""Writes of billing: prices and quotes, the usage ledger, and what goes to and comes from Stripe."""

import datetime as dt
import logging
import math
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from functools import partial

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from billing import stripe_gateway
from billing.models import Invoice, Price, Quote, StripeAccount, StripeEvent, Unit, UsageLine, UsageSync
from billing.selectors import all_lines_in_month, month_lines, month_units, usage_lines_due
from marketplace.exceptions import Conflict, NotPermitted, ServiceError

logger = logging.getLogger(__name__)
MAX_SYNC_BACKOFF = dt.timedelta(hours=1)

CENT = Decimal("0.01")


@dataclass(frozen=True)
class PriceQuote:
    quantity: Decimal
    unit: str
    unit_price: Decimal
    amount_cents: int
    currency: str


def price_quote(*, report) -> PriceQuote:
    """What a report costs now (`report` may be an unsaved draft): at the tenant's own plan for
    the product, or the list price; with volume tiers, at the tier prices of the units it adds
    to the tenant's month so far (billed, and ordered but not finished). Its unit price is the
    mean of those."""
    price = price_for(tenant=report.tenant, product=report.product)
    if price is None:
        quantity = usage_quantity(report=report, unit=Unit.CELL_DAY)
        return PriceQuote(quantity, Unit.CELL_DAY, Decimal(0), 0, "EUR")
    quantity = usage_quantity(report=report, unit=price.unit)
    tiers = [(Decimal(0), price.unit_price), *price.tiers.values_list("from_quantity", "unit_price")]
    if len(tiers) == 1:
        amount = quantity * price.unit_price
    else:
        amount = _graduated(tiers, before=month_units(tenant=report.tenant, product=report.product), quantity=quantity)
    return PriceQuote(
        quantity=quantity,
        unit=price.unit,
        unit_price=(amount / quantity).quantize(Decimal("0.000001")) if quantity else price.unit_price,
        amount_cents=int(amount.quantize(CENT, rounding=ROUND_HALF_UP) * 100),
        currency=price.currency,
    )


def price_for(*, tenant, product) -> Price | None:
    """The tenant's own plan for the product, else the list price (None: the product is free)."""
    plan = Price.objects.filter(product=product, tenant=tenant).first()
    return plan or Price.objects.filter(product=product, tenant__isnull=True).first()


def _graduated(tiers: list[tuple[Decimal, Decimal]], *, before: Decimal, quantity: Decimal) -> Decimal:
    """The price of units before..before+quantity, each at the unit price of the tier it falls in."""
    amount = Decimal(0)
    bounds = [start for start, _ in tiers[1:]] + [None]
    for (start, unit_price), end in zip(tiers, bounds, strict=True):
        low = max(before, start)
        high = before + quantity if end is None else min(before + quantity, end)
        if high > low:
            amount += (high - low) * unit_price
    return amount


def quote_create(*, tenant, report, fingerprint: str, valid_for: dt.timedelta) -> Quote:
    """A quote for an order (a draft report): its price now, fixed until it expires."""
    priced = price_quote(report=report)
    return Quote.objects.create(
        tenant=tenant,
        product=report.product.code,
        request_fingerprint=fingerprint,
        quantity=priced.quantity,
        unit=priced.unit,
        unit_price=priced.unit_price,
        amount_cents=priced.amount_cents,
        currency=priced.currency,
        expires_at=timezone.now() + valid_for,
    )


def quote_claim(*, tenant, quote_id, product_code: str, fingerprint: str) -> Quote:
    """The tenant's unexpired, unused quote for this very order, locked until the order commits."""
    quote = Quote.objects.select_for_update().filter(tenant=tenant, pk=quote_id).first()
    if quote is None:
        raise ServiceError(f"your organisation has no quote {quote_id}", code="unknown_quote", field="quote")
    if quote.report_id is not None:
        raise Conflict(f"quote {quote_id} was used by report {quote.report_id}; ask for a new one", code="quote_used")
    if quote.expires_at <= timezone.now():
        raise ServiceError(
            f"quote {quote_id} expired at {quote.expires_at.isoformat()}; ask for a new one",
            code="quote_expired",
            field="quote",
        )
    if quote.product != product_code or quote.request_fingerprint != fingerprint:
        raise ServiceError(
            f"quote {quote_id} was given for another order; an order may use a quote only with the same body",
            code="quote_mismatch",
            field="quote",
        )
    return quote


def usage_record(*, report) -> UsageLine:
    """The usage line of a succeeded report, at the price of its quote (or, for a report
    ordered before quotes, its product's price now). Called in the transaction that marks the
    report succeeded; a second call for the same report is refused by the database (one usage
    line per report), so a retried task cannot bill twice."""
    quote = Quote.objects.filter(report=report).first()
    priced = (
        PriceQuote(quote.quantity, quote.unit, quote.unit_price, quote.amount_cents, quote.currency)
        if quote
        else price_quote(report=report)
    )
    line = UsageLine.objects.create(
        tenant_id=report.tenant_id,
        report=report,
        kind=UsageLine.Kind.USAGE,
        product=report.product.code,
        quantity=priced.quantity,
        unit=priced.unit,
        unit_price=priced.unit_price,
        amount_cents=priced.amount_cents,
        currency=priced.currency,
    )
    _outbox(line)
    return line


def _outbox(line: UsageLine) -> None:
    """Queue the line for Stripe in the transaction that writes it, and try it once that commits."""
    UsageSync.objects.create(line=line)
    transaction.on_commit(partial(_sync_enqueue, line.pk))


def _sync_enqueue(line_id: int) -> None:
    from billing.tasks import sync_usage  # the task calls these services

    try:
        sync_usage.delay(line_id)
    except Exception:  # the broker is down: the beat sweep sends the line later
        logger.warning("could not queue the Stripe sync of usage line %s; the sweep will", line_id, exc_info=True)


def usage_quantity(*, report, unit: str) -> Decimal:
    """Cells (or zones) times days, a started day counting whole; a compare report counts both sides."""
    days = math.ceil((report.end - report.start).total_seconds() / 86400)
    places = len(report.regions) if unit == Unit.ZONE_DAY else report.cell_count
    if report.compare_start or report.compare_geometry:
        places += report.compare_cell_count or report.cell_count
    return Decimal(places * days)


def credit_issue(*, report, amount_cents: int, reason: str, by) -> UsageLine:
    """A credit on a report, at most what is still billed for it."""
    credit_check(report=report, amount_cents=amount_cents, reason=reason)
    usage = UsageLine.objects.get(report=report, kind=UsageLine.Kind.USAGE)
    credit = UsageLine.objects.create(
        tenant_id=report.tenant_id,
        report=report,
        kind=UsageLine.Kind.CREDIT,
        product=report.product.code,
        quantity=Decimal(0),
        unit=usage.unit,
        unit_price=usage.unit_price,
        amount_cents=-amount_cents,
        currency=usage.currency,
        reason=reason.strip(),
        created_by=by,
    )
    _outbox(credit)
    return credit


def credit_check(*, report, amount_cents: int, reason: str) -> None:
    if amount_cents <= 0:
        raise ServiceError("a credit is a positive amount of cents", code="invalid_credit", field="amount_cents")
    if not reason.strip():
        raise ServiceError("say why the credit is given", code="credit_needs_reason", field="reason")
    billed = UsageLine.objects.filter(report=report).aggregate(total=Sum("amount_cents"))["total"] or 0
    if amount_cents > billed:
        raise ServiceError(
            f"the report is billed {billed / 100:.2f} now; a credit cannot exceed it", code="credit_too_large"
        )


# --- Stripe ----------------------------------------------------------------------------


def stripe_account_ensure(*, tenant) -> StripeAccount:
    """The tenant's Stripe customer and subscription, made on first need; once per tenant."""
    account = StripeAccount.objects.filter(tenant=tenant).first()
    if account:
        return account
    with transaction.atomic():
        # One maker at a time per tenant; Stripe's idempotency keys cover a retry after a crash.
        type(tenant).objects.select_for_update().get(pk=tenant.pk)
        account = StripeAccount.objects.filter(tenant=tenant).first()
        if account is None:
            customer_id, subscription_id = stripe_gateway.customer_create(tenant_id=tenant.pk, name=tenant.name)
            account = StripeAccount.objects.create(
                tenant=tenant, customer_id=customer_id, subscription_id=subscription_id
            )
    return account


def usage_sync(*, line_id: int) -> str:
    """Send one usage line to Stripe as an invoice item, exactly once: the line's row is locked
    while it is sent, an item already made for it (a crash after Stripe answered) is found
    again by the line's id in its metadata instead of made twice, and the line is marked
    synced in the same transaction. If Stripe cannot be reached, try again later (backing
    off). Returns what happened: synced, retry, done (synced before or being sent), off."""
    if not settings.STRIPE_SECRET_KEY:
        return "off"
    line = UsageLine.objects.select_related("tenant").filter(pk=line_id).first()
    if line is None:
        return "done"
    try:
        account = stripe_account_ensure(tenant=line.tenant)
    except stripe_gateway.StripeUnavailable as error:
        _sync_later(line_id, error)
        return "retry"
    try:
        with transaction.atomic():
            sync = (
                UsageSync.objects.select_for_update(skip_locked=True)
                .filter(pk=line_id, state=UsageSync.State.PENDING)
                .first()
            )
            if sync is None:
                return "done"
            item_id = stripe_gateway.invoice_item_find(customer_id=account.customer_id, line_id=line.pk)
            if item_id is None:
                item_id = stripe_gateway.invoice_item_create(
                    customer_id=account.customer_id,
                    line_id=line.pk,
                    amount_cents=line.amount_cents,
                    currency=line.currency,
                    description=_item_description(line),
                )
            _synced(sync, item_id)
    except stripe_gateway.StripeUnavailable as error:
        _sync_later(line_id, error)
        return "retry"
    return "synced"


def _synced(sync: UsageSync, item_id: str) -> None:
    sync.state = UsageSync.State.SYNCED
    sync.stripe_invoice_item_id = item_id
    sync.synced_at = timezone.now()
    sync.last_error = ""
    sync.save(update_fields=["state", "stripe_invoice_item_id", "synced_at", "last_error"])


def _item_description(line: UsageLine) -> str:
    if line.kind == UsageLine.Kind.MINIMUM:
        return f"{line.product}: top-up to the monthly minimum of {line.month:%Y-%m}"
    if line.kind == UsageLine.Kind.CREDIT:
        return f"credit on report {line.report_id}: {line.reason}"[:500]
    return f"{line.product} report {line.report_id}: {line.quantity} {line.unit}"


def _sync_later(line_id: int, error: Exception) -> None:
    sync = UsageSync.objects.get(pk=line_id)
    sync.attempts += 1
    sync.next_attempt_at = timezone.now() + min(dt.timedelta(minutes=2**sync.attempts), MAX_SYNC_BACKOFF)
    sync.last_error = str(error)[:2000]
    sync.save(update_fields=["attempts", "next_attempt_at", "last_error"])


def usage_sync_due() -> int:
    """The outbox sweep: send every line whose next try is due (new ones whose task was lost,
    and retries); returns how many were tried."""
    due = usage_lines_due()
    for line_id in due:
        usage_sync(line_id=line_id)
    return len(due)


def minimums_record(*, month: dt.date) -> list[UsageLine]:
    """For each tenant's plan with a monthly minimum, a line topping the month (in the tenant's
    time zone) up to it where it was billed less, net of credits; once per tenant, product and
    month (closing a month again adds nothing)."""
    first = month.replace(day=1)
    lines = []
    for price in Price.objects.filter(tenant__isnull=False, monthly_minimum_cents__isnull=False).select_related(
        "tenant", "product"
    ):
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


@dataclass(frozen=True)
class MonthClosed:
    minimums: list[UsageLine]  # the month's top-ups to plans' minimums
    invoices: list[tuple]  # (tenant, its invoice, or None: nothing to invoice)


def month_close_all(*, month: dt.date) -> MonthClosed:
    """Close a month of BILLING_TIME_ZONE: top plans up to their monthly minimums, send what
    still waits in the outbox, then invoice each tenant's Stripe customer and try to collect.
    Safe to run again: it adds no second top-up and makes no second invoice."""
    minimums = minimums_record(month=month)
    for line_id in all_lines_in_month(month).filter(sync__state=UsageSync.State.PENDING).values_list("pk", flat=True):
        usage_sync(line_id=line_id)
    invoices = [
        (account.tenant, month_close(tenant=account.tenant, month=f"{month:%Y-%m}"))
        for account in StripeAccount.objects.select_related("tenant").order_by("tenant__name")
    ]
    return MonthClosed(minimums=minimums, invoices=invoices)


def month_close(*, tenant, month: str) -> Invoice | None:
    """Invoice what the tenant's customer has pending in Stripe (its synced lines) and try to
    collect; the invoice as mirrored here. None if the tenant has no Stripe customer or
    nothing pending."""
    account = StripeAccount.objects.filter(tenant=tenant).first()
    if account is None or not stripe_gateway.has_pending_items(customer_id=account.customer_id):
        return None  # nothing to invoice: closing a month twice makes no second invoice
    invoice = stripe_gateway.invoice_close(
        customer_id=account.customer_id, subscription_id=account.subscription_id, month=month
    )
    return invoice_mirror(invoice=invoice, tenant=tenant, changed=invoice.get("created", 0))


def invoice_mirror(*, invoice: dict, tenant, changed: int, payment_failed: bool = False) -> Invoice:
    """Keep the local copy of a Stripe invoice as new as the newest news of it (`changed`,
    Stripe's time of the event or fetch); older news changes nothing. Its lines' usage lines
    learn which invoice holds them."""
    with transaction.atomic():
        local, _ = Invoice.objects.select_for_update().get_or_create(
            stripe_invoice_id=invoice["id"],
            defaults={
                "tenant": tenant,
                "status": invoice.get("status") or "draft",
                "currency": (invoice.get("currency") or "eur").upper(),
                "amount_due_cents": invoice.get("amount_due") or 0,
                "created_at": _instant(invoice.get("created")),
            },
        )
        if changed < local.stripe_updated:
            return local
        local.status = invoice.get("status") or local.status
        local.number = invoice.get("number") or ""
        local.amount_due_cents = invoice.get("amount_due") or 0
        local.amount_paid_cents = invoice.get("amount_paid") or 0
        local.hosted_invoice_url = invoice.get("hosted_invoice_url") or ""
        local.stripe_updated = changed
        if local.status == "paid":
            paid_at = (invoice.get("status_transitions") or {}).get("paid_at")
            local.paid_at = _instant(paid_at) if paid_at else timezone.now()
            local.payment_failed_at = None
        elif payment_failed and local.payment_failed_at is None:
            local.payment_failed_at = timezone.now()
        local.save()
        items = [line.get("invoice_item") for line in (invoice.get("lines") or {}).get("data", [])]
        UsageSync.objects.filter(stripe_invoice_item_id__in=[item for item in items if item]).update(
            stripe_invoice_id=invoice["id"]
        )
    return local


def _instant(epoch: int | None) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC) if epoch else timezone.now()


INVOICE_EVENTS = {
    "invoice.created",
    "invoice.finalized",
    "invoice.updated",
    "invoice.paid",
    "invoice.payment_succeeded",
    "invoice.payment_failed",
    "invoice.voided",
    "invoice.marked_uncollectible",
}
SUBSCRIPTION_EVENTS = {
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
}


def stripe_event_receive(*, event: dict) -> bool:
    """Store a verified webhook event as received, then apply it, once: a second delivery of
    the same event changes nothing. Returns whether it was new."""
    with transaction.atomic():
        stored, created = StripeEvent.objects.get_or_create(
            id=event["id"], defaults={"type": event["type"], "payload": event}
        )
    with transaction.atomic():
        stored = StripeEvent.objects.select_for_update().get(pk=stored.pk)
        if stored.processed_at is not None:
            return False
        _apply(event)
        stored.processed_at = timezone.now()
        stored.save(update_fields=["processed_at"])
    return created


def _apply(event: dict) -> None:
    subject = (event.get("data") or {}).get("object") or {}
    account = StripeAccount.objects.select_related("tenant").filter(customer_id=subject.get("customer")).first()
    if account is None:
        return  # not one of our customers' (or not about a customer): kept, nothing to do
    if event["type"] in INVOICE_EVENTS:
        invoice_mirror(
            invoice=subject,
            tenant=account.tenant,
            changed=event.get("created", 0),
            payment_failed=event["type"] == "invoice.payment_failed",
        )
    elif event["type"] in SUBSCRIPTION_EVENTS:
        account.subscription_status = "canceled" if event["type"].endswith("deleted") else subject.get("status", "")
        account.save(update_fields=["subscription_status"])


def check_payment_standing(*, tenant) -> None:
    """New orders are refused while an invoice payment has failed for longer than the grace period."""
    overdue_since = timezone.now() - dt.timedelta(days=settings.BILLING_PAYMENT_GRACE_DAYS)
    overdue = (
        Invoice.objects.filter(tenant=tenant, status="open", payment_failed_at__lte=overdue_since)
        .order_by("payment_failed_at")
        .first()
    )
    if overdue:
        raise NotPermitted(
            f"the payment of invoice {overdue.number or overdue.stripe_invoice_id}"
            f" ({overdue.amount_due_cents / 100:.2f} {overdue.currency}) failed on"
            f" {overdue.payment_failed_at:%Y-%m-%d} and is overdue; new orders are possible again once it is paid",
            code="payment_overdue",
        )
