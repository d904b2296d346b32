"""The checks an order meets besides its own shape: the tenant's licences, the loaded data,
what the tenant has ordered and spent. Each raises a ServiceError naming what to change."""

import datetime as dt
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.gis.geos import MultiPolygon
from django.utils import timezone

from billing import selectors as billing_selectors
from insights.buckets import is_boundary
from insights.products import PRODUCTS
from marketplace import selectors
from marketplace.exceptions import NotPermitted, PaymentRequired, ServiceError, TooManyRequests
from marketplace.models import Product, ProductGrantPeriod, Tenant
from marketplace.policy import OrderPolicy

# Reprojection noise along a licensed region's edge, not area outside it.
LICENCE_TOLERANCE_KM2 = 1e-6


def check_entitlement(*, product: Product) -> None:
    """product: as selectors.product_for_order gives it, with what the tenant holds of it."""
    code = product.code
    if not (product.granted_globally or product.granted_on_object):
        raise NotPermitted(
            f"your organisation has no licence for the product {code!r}; ask your account manager",
            code="product_not_granted",
        )
    period = ProductGrantPeriod(valid_from=product.grant_valid_from, valid_until=product.grant_valid_until)
    if not period.covers(timezone.now()):
        raise NotPermitted(
            f"your organisation's licence for {code!r} is valid from {period.valid_from or 'the start'}"
            f" until {period.valid_until or 'no end'}, not now; ask your account manager",
            code="product_grant_not_valid",
        )


def check_licence(*, tenant: Tenant, geometry: MultiPolygon, field: str) -> None:
    """An order must lie inside the regions the tenant is licensed for today."""
    names, outside_km2 = selectors.licence_shortfall(tenant=tenant, geometry=geometry, at=timezone.now())
    if not names:
        raise NotPermitted(
            "your organisation has no licensed region to order in today; ask your account manager",
            code="no_licensed_region",
        )
    if outside_km2 > LICENCE_TOLERANCE_KM2:
        raise NotPermitted(
            f"{outside_km2:.3f} km² of the area lie outside your organisation's licensed regions ({', '.join(names)})",
            code="outside_licensed_region",
        )


def check_breakdowns(*, breakdowns: tuple[str, ...], product: Product) -> None:
    for breakdown in breakdowns:
        if breakdown not in product.breakdowns:
            offered = ", ".join(product.breakdowns) or "none"
            raise ServiceError(
                f"{product.code} cannot be broken down by {breakdown}; it offers: {offered}",
                code="breakdown_not_offered",
                field="breakdowns",
            )


def check_period(
    *,
    product: Product,
    start: dt.datetime,
    end: dt.datetime,
    granularity: str,
    time_zone: str,
    fields: tuple[str, str] = ("start", "end"),
) -> None:
    start_field, end_field = fields
    tz = ZoneInfo(time_zone)
    if start >= end:
        raise ServiceError(
            f"{end_field} must be after {start_field}, got {start.isoformat()} and {end.isoformat()}",
            code="end_not_after_start",
            field=end_field,
        )
    for field, instant in ((start_field, start), (end_field, end)):
        if not is_boundary(instant, granularity, tz):
            local = instant.astimezone(tz).isoformat()
            raise ServiceError(
                f"{field} must fall on a {granularity} boundary in {time_zone}, got {local}",
                code="not_on_bucket_boundary",
                field=field,
            )
    coverage = selectors.coverage(kind=PRODUCTS[product.code].kind)
    if coverage is None:
        raise ServiceError("no data has been loaded yet", code="no_data", field=start_field)
    if start < coverage.start or end > coverage.end:
        raise ServiceError(
            f"the loaded data covers {coverage.start.astimezone(tz).isoformat()} to"
            f" {coverage.end.astimezone(tz).isoformat()}; got {start.astimezone(tz).isoformat()}"
            f" to {end.astimezone(tz).isoformat()}",
            code="outside_loaded_data",
            field=start_field if start < coverage.start else end_field,
        )
    gap = coverage.first_gap_in(start, end)
    if gap:
        raise ServiceError(
            f"no data was loaded for {gap[0].astimezone(tz).isoformat()} to {gap[1].astimezone(tz).isoformat()};"
            " choose a period without it",
            code="no_data_in_period",
            field=start_field,
        )


def check_reports_in_progress(*, in_progress: int) -> None:
    """in_progress: the tenant's reports queued or running (selectors.reports_in_progress)."""
    if in_progress >= settings.MAX_REPORTS_IN_PROGRESS:
        raise TooManyRequests(
            f"your organisation has {in_progress} reports queued or running, the most at once"
            f" ({settings.MAX_REPORTS_IN_PROGRESS}); order again when one has finished",
            code="too_many_reports_in_progress",
            retry_after=settings.REPORTS_IN_PROGRESS_RETRY_SECONDS,
        )


def check_fair_use(
    *,
    tenant: Tenant,
    product: Product,
    policy: OrderPolicy,
    queries: list[tuple[MultiPolygon, dt.datetime, dt.datetime]],
) -> int:
    """Count every area of the order against the tenant's fair-use quota over overlapping cells
    and periods (the order's own areas that overlap it too); returns what is left after it.
    Not a privacy defence: the release is."""
    same_data = PRODUCTS[product.code].same_data
    remaining = policy.query_budget
    for geometry, start, end in queries:
        used = selectors.report_overlapping_count(
            tenant=tenant, products=same_data, geometry=geometry, start=start, end=end
        )
        own = sum(
            other_start < end and start < other_end and other.intersects(geometry) and not other.touches(geometry)
            for other, other_start, other_end in queries
        )
        if used + own > policy.query_budget:
            raise NotPermitted(
                f"your organisation has placed {used} orders over cells and a period overlapping this one, and"
                f" this order adds {own}; its fair-use quota allows {policy.query_budget}; ask your account manager",
                code="query_budget_exhausted",
            )
        remaining = min(remaining, policy.query_budget - used - own)
    return remaining


def check_spending_limit(*, tenant: Tenant, amount_cents: int, currency: str) -> None:
    limit = tenant.monthly_spending_limit_cents
    if limit is None:
        return
    spent = billing_selectors.month_spent_cents(tenant=tenant, month=billing_selectors.current_month(tenant))
    committed = billing_selectors.committed_cents(tenant=tenant)
    if spent + committed + amount_cents > limit:
        raise PaymentRequired(
            f"this order costs {amount_cents / 100:.2f} {currency}; your organisation has been billed"
            f" {spent / 100:.2f} this month and {committed / 100:.2f} is in reports still running, and its"
            f" monthly spending limit is {limit / 100:.2f}; an owner may raise it",
            code="spending_limit_exceeded",
        )
