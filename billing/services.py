"""Writes of billing: the usage ledger."""

import math
from decimal import ROUND_HALF_UP, Decimal

from django.db.models import Sum

from billing.models import Price, Unit, UsageLine
from marketplace.exceptions import ServiceError

CENT = Decimal("0.01")


def usage_record(*, report) -> UsageLine:
    """The usage line of a succeeded report, at its product's price. Called in the transaction
    that marks the report succeeded; a second call for the same report is refused by the
    database (one usage line per report), so a retried task cannot bill twice."""
    price = Price.objects.filter(product=report.product).first()
    unit = price.unit if price else Unit.CELL_DAY
    unit_price = price.unit_price if price else Decimal(0)
    quantity = usage_quantity(report=report, unit=unit)
    return UsageLine.objects.create(
        tenant_id=report.tenant_id,
        report=report,
        kind=UsageLine.Kind.USAGE,
        product=report.product.code,
        quantity=quantity,
        unit=unit,
        unit_price=unit_price,
        amount_cents=int((quantity * unit_price).quantize(CENT, rounding=ROUND_HALF_UP) * 100),
        currency=price.currency if price else "EUR",
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
