"""Writes of billing: prices and quotes, and the usage ledger. Stripe: billing/sync.py (sending
lines), billing/closing.py (the month close), billing/invoices.py (invoices and webhooks),
billing/credit_notes.py; VAT: billing/tax.py; months: billing/months.py."""

import datetime as dt
import logging
import math
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from functools import partial

from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from billing.invoices import check_payment_standing  # noqa: F401 - orders call it here
from billing.models import Price, Quote, Unit, UsageLine, UsageSync
from billing.selectors import month_units
from marketplace.exceptions import Conflict, ServiceError

logger = logging.getLogger(__name__)

CENT = Decimal("0.01")


@dataclass(frozen=True)
class PriceQuote:
    quantity: Decimal
    unit: str
    unit_price: Decimal
    amount_cents: int
    currency: str

    @classmethod
    def of(cls, quote: Quote) -> "PriceQuote":
        return cls(quote.quantity, quote.unit, quote.unit_price, quote.amount_cents, quote.currency)


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
    tiers = [(Decimal(0), price.unit_price), *zip(price.tier_starts, price.tier_prices, strict=True)]
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


# The tenant's own plan first, else the list price, with its tiers by quantity; in SQL: the ORM's
# aggregate query cost more to build than to run, on every order and quote.
_PRICE_FOR = """
    SELECT price.*,
           coalesce(array_agg(tier.from_quantity ORDER BY tier.from_quantity) FILTER (WHERE tier.id IS NOT NULL),
                    '{}') AS tier_starts,
           coalesce(array_agg(tier.unit_price ORDER BY tier.from_quantity) FILTER (WHERE tier.id IS NOT NULL),
                    '{}') AS tier_prices
    FROM billing_price price LEFT JOIN billing_pricetier tier ON tier.price_id = price.id
    WHERE price.product_id = %(product)s AND (price.tenant_id = %(tenant)s OR price.tenant_id IS NULL)
    GROUP BY price.id
    ORDER BY price.tenant_id NULLS LAST
    LIMIT 1
"""


def price_for(*, tenant, product) -> Price | None:
    """The tenant's own plan for the product, else the list price (None: the product is free);
    with its tiers (`tier_starts`, `tier_prices`, by quantity), in one query."""
    return next(iter(Price.objects.raw(_PRICE_FOR, {"product": product.pk, "tenant": tenant.pk})), None)


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
    return _quote_write(
        tenant=tenant,
        report=None,
        product_code=report.product.code,
        priced=price_quote(report=report),
        fingerprint=fingerprint,
        expires_at=timezone.now() + valid_for,
    )


def quote_record(*, tenant, report, priced: PriceQuote, fingerprint: str) -> Quote:
    """The quote an order placed without one is billed at: its price at ordering, written with
    the (saved) report; expired at once, as it was never offered."""
    return _quote_write(
        tenant=tenant,
        report=report,
        product_code=report.product.code,
        priced=priced,
        fingerprint=fingerprint,
        expires_at=timezone.now(),
    )


def _quote_write(*, tenant, report, product_code: str, priced: PriceQuote, fingerprint: str, expires_at) -> Quote:
    return Quote.objects.create(
        tenant=tenant,
        report=report,
        product=product_code,
        request_fingerprint=fingerprint,
        quantity=priced.quantity,
        unit=priced.unit,
        unit_price=priced.unit_price,
        amount_cents=priced.amount_cents,
        currency=priced.currency,
        expires_at=expires_at,
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


# The usage line and its outbox row (pending, due now) in one statement: one round trip on
# every report's success.
_USAGE_WITH_SYNC = """
    WITH line AS (
        INSERT INTO billing_usageline (tenant_id, report_id, month, kind, product, quantity, unit, unit_price,
                                       amount_cents, currency, reason, created_by_id, created_at)
        VALUES (%(tenant)s, %(report)s, NULL, %(kind)s, %(product)s, %(quantity)s, %(unit)s, %(unit_price)s,
                %(amount_cents)s, %(currency)s, '', NULL, %(now)s)
        RETURNING *
    ), sync AS (
        INSERT INTO billing_usagesync (line_id, state, attempts, next_attempt_at, last_error, lease_until,
                                       stripe_invoice_item_id, stripe_invoice_id, synced_at)
        SELECT id, %(pending)s, 0, %(now)s, '', NULL, '', '', NULL FROM line
    )
    SELECT * FROM line
"""


def usage_record(*, report) -> UsageLine:
    """The usage line of a succeeded report, at the price of its quote (or, for a report
    ordered before quotes, its product's price now), queued for Stripe. Called in the
    transaction that marks the report succeeded; a second call for the same report is refused
    by the database (one usage line per report), so a retried task cannot bill twice."""
    # The reverse one-to-one: read with the report when it was selected with it; a report without
    # a quote raises RelatedObjectDoesNotExist, an AttributeError.
    quote = getattr(report, "quote", None)
    priced = PriceQuote.of(quote) if quote else price_quote(report=report)
    params = {
        "tenant": report.tenant_id,
        "report": report.pk,
        "kind": UsageLine.Kind.USAGE,
        "product": report.product.code,
        "quantity": priced.quantity,
        "unit": priced.unit,
        "unit_price": priced.unit_price,
        "amount_cents": priced.amount_cents,
        "currency": priced.currency,
        "now": timezone.now(),
        "pending": UsageSync.State.PENDING,
    }
    line = next(iter(UsageLine.objects.raw(_USAGE_WITH_SYNC, params)))
    transaction.on_commit(partial(_sync_enqueue, line.pk))
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
