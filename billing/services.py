"""Writes of billing: quotes and the usage ledger."""

import datetime as dt
import math
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from django.db.models import Sum
from django.utils import timezone

from billing.models import Price, Quote, Unit, UsageLine
from marketplace.exceptions import Conflict, ServiceError

CENT = Decimal("0.01")


@dataclass(frozen=True)
class PriceQuote:
    quantity: Decimal
    unit: str
    unit_price: Decimal
    amount_cents: int
    currency: str


def price_quote(*, report) -> PriceQuote:
    """What a report costs at its product's price now; `report` may be an unsaved draft."""
    price = Price.objects.filter(product=report.product).first()
    unit = price.unit if price else Unit.CELL_DAY
    unit_price = price.unit_price if price else Decimal(0)
    quantity = usage_quantity(report=report, unit=unit)
    return PriceQuote(
        quantity=quantity,
        unit=unit,
        unit_price=unit_price,
        amount_cents=int((quantity * unit_price).quantize(CENT, rounding=ROUND_HALF_UP) * 100),
        currency=price.currency if price else "EUR",
    )


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
    return UsageLine.objects.create(
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
    return UsageLine.objects.create(
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
