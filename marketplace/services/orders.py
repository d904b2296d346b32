"""Report orders: quoted (every check run, each result reported) or placed (the first
refusal stops it), then queued; and cancelled."""

import datetime as dt
import time
import uuid
from dataclasses import dataclass
from functools import partial
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.gis.geos import MultiPolygon
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from billing import services as billing_services
from billing.models import Quote
from insights import selectors as insights_selectors
from insights.buckets import buckets
from insights.products import PRODUCTS, Regions
from marketplace import selectors
from marketplace.exceptions import Conflict, ServiceError, Unprocessable
from marketplace.models import ApiKey, Area, Product, Report, Tenant
from marketplace.observability.context import log_context_update
from marketplace.observability.metrics import report_stage_observe
from marketplace.policy import OrderPolicy
from marketplace.services import order_checks, outbox
from marketplace.services.admission import check_service_capacity, order_admitted
from marketplace.services.areas import MeasuredArea, area_measure
from marketplace.services.audit import audit
from marketplace.services.checks import Check, Checklist, strictly
from marketplace.services.keys import Principal

IDEMPOTENCY_KEY_MAX_LENGTH = Report._meta.get_field("idempotency_key").max_length
# The first key of the advisory lock that serializes a tenant's orders (the second is the tenant id).
TENANT_ORDER_LOCK = 0x4F52  # "OR"
# Trips are counted between every pair: the matrix grows with the square of the zones.
MAX_OD_ZONES = 100


@dataclass(frozen=True)
class ReportOrder:
    product_code: str
    start: dt.datetime
    end: dt.datetime
    granularity: str
    area_id: uuid.UUID | None = None
    geometry: MultiPolygon | None = None
    name: str = ""
    breakdowns: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    compare_start: dt.datetime | None = None
    compare_end: dt.datetime | None = None
    compare_area_id: uuid.UUID | None = None
    compare_geometry: MultiPolygon | None = None
    compare_name: str = ""


@dataclass(frozen=True)
class _Plan:
    """An order checked against everything but what the tenant ordered before."""

    product: Product
    policy: OrderPolicy
    name: str
    measured: MeasuredArea
    area: Area | None
    comparison: dict
    regions: list[str]

    def draft(self, *, tenant: Tenant, order: ReportOrder) -> Report:
        """The report the order would make, unsaved: what it costs is priced on it."""
        return Report(
            tenant=tenant,
            product=self.product,
            area=self.area,
            area_name=self.name,
            geometry=self.measured.geometry,
            area_km2=self.measured.area_km2,
            cell_count=self.measured.cell_count,
            start=order.start,
            end=order.end,
            granularity=order.granularity,
            breakdowns=list(order.breakdowns),
            regions=self.regions,
            time_zone=tenant.time_zone,
            **self.comparison,
        )

    def queries(self, order: ReportOrder) -> list[tuple]:
        return _queries(order, self.measured.geometry, self.comparison)


def _order_plan(*, tenant: Tenant, order: ReportOrder, check: Check) -> _Plan:
    product = _active_product(tenant=tenant, code=order.product_code)
    check("entitlement", partial(order_checks.check_entitlement, product=product))
    order_checks.check_breakdowns(breakdowns=order.breakdowns, product=product)
    order_checks.check_period(
        product=product, start=order.start, end=order.end, granularity=order.granularity, time_zone=tenant.time_zone
    )
    policy = product.order_policy()
    name, measured, area = _order_area(
        tenant=tenant,
        area_id=order.area_id,
        geometry=order.geometry,
        name=order.name,
        in_grid=PRODUCTS[product.code].in_grid,
        policy=policy,
        check=check,
    )
    comparison = _order_comparison(tenant=tenant, order=order, product=product, policy=policy, check=check)
    check(
        "licensed_region",
        partial(order_checks.check_licence, tenant=tenant, geometry=measured.geometry, field="geometry"),
    )
    if comparison.get("compare_geometry"):
        check(
            "licensed_region",
            partial(
                order_checks.check_licence,
                tenant=tenant,
                geometry=comparison["compare_geometry"],
                field="compare_geometry",
            ),
        )
    regions = _order_regions(order=order, product=product, geometry=measured.geometry)
    return _Plan(
        product=product,
        policy=policy,
        name=name,
        measured=measured,
        area=area,
        comparison=comparison,
        regions=regions,
    )


def _check_standing(
    *,
    tenant: Tenant,
    plan: _Plan,
    order: ReportOrder,
    amount_cents: int,
    currency: str,
    check: Check,
    service_capacity: bool = False,
) -> int | None:
    """The checks against what the tenant has ordered and spent, and (service_capacity) the
    service's reports in progress; returns the query budget left."""
    tenant_in_progress, service_in_progress = selectors.reports_in_progress(tenant=tenant)
    if service_capacity:
        check_service_capacity(in_progress=service_in_progress)
    check("payment", partial(billing_services.check_payment_standing, tenant=tenant))
    check("reports_in_progress", partial(order_checks.check_reports_in_progress, in_progress=tenant_in_progress))
    budget_remaining = check(
        "fair_use",
        partial(
            order_checks.check_fair_use,
            tenant=tenant,
            product=plan.product,
            policy=plan.policy,
            queries=plan.queries(order),
        ),
    )
    check(
        "spending_limit",
        partial(order_checks.check_spending_limit, tenant=tenant, amount_cents=amount_cents, currency=currency),
    )
    return budget_remaining


def _locked_for_orders(tenant: Tenant) -> None:
    """One order of a tenant at a time, until the transaction ends: two at once could each
    pass the privacy and spending checks against what was ordered before, but not against
    each other."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [TENANT_ORDER_LOCK, tenant.pk])


@order_admitted()
def report_quote(*, principal: Principal, order: ReportOrder, fingerprint: str) -> tuple[Quote, list[dict]]:
    """Price an order and run every check it would meet, without ordering: the quote, and each
    check with whether it passed (and if not, why). A badly formed order is refused as an
    order would be."""
    tenant = principal.tenant
    checks = Checklist()
    plan = _order_plan(tenant=tenant, order=order, check=checks)
    with transaction.atomic():
        draft = plan.draft(tenant=tenant, order=order)
        quote = billing_services.quote_create(
            tenant=tenant, report=draft, fingerprint=fingerprint, valid_for=settings.QUOTE_VALID_FOR
        )
        _check_standing(
            tenant=tenant,
            plan=plan,
            order=order,
            amount_cents=quote.amount_cents,
            currency=quote.currency,
            check=checks,
        )
    return quote, checks.results


@order_admitted()
def report_create(
    *,
    principal: Principal,
    order: ReportOrder,
    idempotency_key: str | None = None,
    fingerprint: str = "",
    order_fingerprint: str = "",
    quote_id: uuid.UUID | None = None,
) -> tuple[Report, bool]:
    """Place an order; returns (report, created). A repeated idempotency key returns the first report.

    fingerprint: SHA-256 of the request's body; order_fingerprint: of the body without its
    quote. quote_id: the quote whose price the report is billed at (given for the same
    order); without one, the product's price now.
    """
    started = time.perf_counter()
    tenant = principal.tenant
    if idempotency_key and len(idempotency_key) > IDEMPOTENCY_KEY_MAX_LENGTH:
        raise ServiceError(
            f"the Idempotency-Key header must be at most {IDEMPOTENCY_KEY_MAX_LENGTH} characters,"
            f" got {len(idempotency_key)}",
            code="invalid_idempotency_key",
        )
    if idempotency_key:
        existing = selectors.report_by_idempotency_key(tenant=tenant, key=idempotency_key)
        if existing:
            return _replayed(existing, fingerprint), False

    plan = _order_plan(tenant=tenant, order=order, check=strictly)
    now = timezone.now()
    try:
        with transaction.atomic():
            _locked_for_orders(tenant)
            draft = plan.draft(tenant=tenant, order=order)
            quote = None
            if quote_id is not None:
                quote = billing_services.quote_claim(
                    tenant=tenant, quote_id=quote_id, product_code=plan.product.code, fingerprint=order_fingerprint
                )
                priced = billing_services.PriceQuote.of(quote)
            else:
                priced = billing_services.price_quote(report=draft)
            budget_remaining = _check_standing(
                tenant=tenant,
                plan=plan,
                order=order,
                amount_cents=priced.amount_cents,
                currency=priced.currency,
                check=strictly,
                service_capacity=True,
            )
            draft.query_budget_remaining = budget_remaining
            draft.idempotency_key = idempotency_key
            draft.request_fingerprint = fingerprint
            draft.ordered_by_key = principal.api_key
            draft.queued_at = now
            draft.save()
            report = draft
            log_context_update(report_id=str(report.pk))  # the request's log lines name it from here
            if quote is None:  # written with its report, which it prices
                quote = billing_services.quote_record(
                    tenant=tenant, report=report, priced=priced, fingerprint=order_fingerprint
                )
            else:
                quote.report = report
                quote.save(update_fields=["report"])
            audit(
                tenant=tenant,
                actor=principal.api_key,
                action="report.ordered",
                target=f"report {report.pk}",
                product=plan.product.code,
                quote=str(quote.pk),
                amount_cents=quote.amount_cents,
            )
            transaction.on_commit(partial(outbox.report_publish, report.pk))
            report_stage_observe("order_checks", time.perf_counter() - started)
    except IntegrityError:
        if not idempotency_key:
            raise
        # A concurrent request with the same idempotency key won the race.
        existing = Report.objects.filter(tenant=tenant, idempotency_key=idempotency_key).first()
        if existing is None:
            raise
        return _replayed(existing, fingerprint), False
    return report, True


def _replayed(report: Report, fingerprint: str) -> Report:
    if report.request_fingerprint != fingerprint:
        raise Unprocessable(
            "this Idempotency-Key was already used with a different request body; use a new key for a new order",
            code="idempotency_key_reused",
        )
    return report


def _active_product(*, tenant: Tenant, code: str) -> Product:
    product = selectors.product_for_order(tenant=tenant, code=code)
    if product is None or code not in PRODUCTS:  # a catalog row without an engine is not for sale
        raise ServiceError(f"unknown product {code!r}", code="unknown_product", field="product")
    return product


def _order_area(
    *,
    tenant: Tenant,
    area_id: uuid.UUID | None,
    geometry: MultiPolygon | None,
    name: str,
    fields: tuple[str, str] = ("area", "geometry"),
    in_grid: bool = True,
    policy: OrderPolicy | None = None,
    check: Check | None = None,
) -> tuple[str, MeasuredArea, Area | None]:
    area_field, geometry_field = fields
    if (area_id is None) == (geometry is None):
        raise ServiceError(
            f"give exactly one of {area_field} (a saved area's id) or {geometry_field}", code="area_or_geometry"
        )
    if geometry is not None:
        measured = area_measure(geometry=geometry, field=geometry_field, in_grid=in_grid, policy=policy, check=check)
        return name or "unnamed area", measured, None
    area = selectors.area_list(tenant=tenant).filter(pk=area_id).first()
    if area is None:
        raise ServiceError(f"no area with id {area_id}", code="does_not_exist", field=area_field)
    measured = MeasuredArea(geometry=area.geometry, area_km2=area.area_km2, cell_count=area.cell_count)
    return area.name, measured, area


def _order_comparison(
    *, tenant: Tenant, order: ReportOrder, product: Product, policy: OrderPolicy, check: Check
) -> dict:
    """The Report fields of a compare order's second period or second area; {} for other products."""
    wants_period = order.compare_start is not None or order.compare_end is not None
    wants_area = order.compare_area_id is not None or order.compare_geometry is not None
    if not PRODUCTS[product.code].takes_comparison:
        if wants_period or wants_area:
            comparing = " or ".join(code for code, spec in PRODUCTS.items() if spec.takes_comparison)
            raise ServiceError(
                f"{product.code} takes no comparison; order the {comparing} product", code="comparison_not_offered"
            )
        return {}
    if wants_period == wants_area:
        raise ServiceError(
            "give a comparison period (compare_start and compare_end) or a comparison area"
            " (compare_area or compare_geometry), one of the two",
            code="comparison_required",
        )
    if wants_area:
        name, measured, _ = _order_area(
            tenant=tenant,
            area_id=order.compare_area_id,
            geometry=order.compare_geometry,
            name=order.compare_name,
            fields=("compare_area", "compare_geometry"),
            policy=policy,
            check=check,
        )
        return {
            "compare_area_name": name,
            "compare_geometry": measured.geometry,
            "compare_area_km2": measured.area_km2,
            "compare_cell_count": measured.cell_count,
        }
    if order.compare_start is None or order.compare_end is None:
        raise ServiceError("give both compare_start and compare_end", code="comparison_period_incomplete")
    order_checks.check_period(
        product=product,
        start=order.compare_start,
        end=order.compare_end,
        granularity=order.granularity,
        time_zone=tenant.time_zone,
        fields=("compare_start", "compare_end"),
    )
    zone = ZoneInfo(tenant.time_zone)
    ordered = len(list(buckets(order.start, order.end, order.granularity, zone)))
    compared = len(list(buckets(order.compare_start, order.compare_end, order.granularity, zone)))
    if ordered != compared:
        raise ServiceError(
            f"the comparison period has {compared} {order.granularity} buckets and the period {ordered};"
            " they must have the same number",
            code="comparison_length_differs",
            field="compare_end",
        )
    return {"compare_start": order.compare_start, "compare_end": order.compare_end}


def _queries(order: ReportOrder, geometry: MultiPolygon, comparison: dict) -> list[tuple]:
    """What an order asks about: its area and period, and a compare order's second ones."""
    queries = [(geometry, order.start, order.end)]
    if comparison:
        compared_geometry = comparison.get("compare_geometry") or geometry
        queries.append(
            (
                compared_geometry,
                comparison.get("compare_start") or order.start,
                comparison.get("compare_end") or order.end,
            )
        )
    return queries


def _order_regions(*, order: ReportOrder, product: Product, geometry: MultiPolygon) -> list[str]:
    """The region codes the report keeps: the catchment's home regions to list, or the
    od-matrix's zones (by default, every zone the area overlaps)."""
    regions = PRODUCTS[product.code].regions
    if regions is Regions.NONE:
        if order.regions:
            taking = " and ".join(code for code, spec in PRODUCTS.items() if spec.regions is not Regions.NONE)
            raise ServiceError(f"{product.code} takes no regions; {taking} do", code="regions_not_offered")
        return []
    codes = list(dict.fromkeys(order.regions))  # once each, in the buyer's order
    known = insights_selectors.regions_by_code(codes)
    unknown = [code for code in codes if code not in known]
    if unknown:
        raise ServiceError(
            f"unknown region(s): {', '.join(unknown)}; GET /api/v1/regions/ lists the loaded ones",
            code="unknown_regions",
            field="regions",
        )
    if regions is Regions.HOME:  # any loaded region
        return codes
    in_area = [region.code for region in insights_selectors.regions_in_area(geometry=geometry)]
    if not codes:
        codes = in_area
        if not codes:
            raise ServiceError(
                "the area overlaps no zone; draw it over the zones whose trips you want (GET /api/v1/regions/)",
                code="no_zones_in_area",
                field="geometry",
            )
    outside = [code for code in codes if code not in in_area]
    if outside:
        raise ServiceError(
            f"zone(s) {', '.join(outside)} lie outside the area; choose zones the area overlaps",
            code="zones_outside_area",
            field="regions",
        )
    if len(codes) > MAX_OD_ZONES:
        raise ServiceError(
            f"an od-matrix holds at most {MAX_OD_ZONES} zones, the area overlaps {len(codes)};"
            " choose some with regions, or draw a smaller area",
            code="too_many_zones",
            field="regions",
        )
    return codes


def report_cancel(*, report: Report, actor: ApiKey | None = None) -> Report:
    cancelled = (
        Report.objects.filter(pk=report.pk)
        .exclude(status__in=Report.FINAL_STATUSES)
        .update(status=Report.Status.CANCELLED, finished_at=timezone.now())
    )
    report.refresh_from_db()
    if not cancelled:
        raise Conflict(
            f"the report has already {report.status}; only queued or running reports can be cancelled",
            code="report_final",
        )
    audit(tenant=report.tenant, actor=actor, action="report.cancelled", target=f"report {report.pk}")
    return report
