"""Writes of the buyer-facing domain: tenants, keys, areas, orders and their lifecycle."""

import contextlib
import datetime as dt
import enum
import hashlib
import hmac
import json
import logging
import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from zoneinfo import ZoneInfo

import requests
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.contrib.gis.geos import MultiPolygon
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone
from guardian.shortcuts import assign_perm, remove_perm

from billing import selectors as billing_selectors
from billing import services as billing_services
from billing.models import Quote
from insights import renderers
from insights import selectors as insights_selectors
from insights import tasks as insights_tasks
from insights.buckets import buckets, is_boundary
from insights.kinds import PRODUCT_KINDS
from insights.models import ReleasePolicy
from insights.reports import catchment_result, compare_result, dwell_result, footfall_result, od_matrix_result
from marketplace import selectors
from marketplace import tasks as marketplace_tasks
from marketplace.exceptions import (
    Conflict,
    NotPermitted,
    PaymentRequired,
    ServiceError,
    TooManyRequests,
    Unprocessable,
)
from marketplace.models import (
    ApiKey,
    Area,
    AuditEvent,
    LicensedRegion,
    Membership,
    Product,
    ProductGrantPeriod,
    Release,
    Report,
    Role,
    Share,
    Tenant,
    WebhookDelivery,
    WebhookEndpoint,
)
from marketplace.policy import OrderPolicy, default_order_policy
from marketplace.selectors import area_list, product_granted_list

logger = logging.getLogger(__name__)

API_KEY_PREFIX_BYTES = 4
API_KEY_SECRET_BYTES = 32
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)
IDEMPOTENCY_KEY_MAX_LENGTH = Report._meta.get_field("idempotency_key").max_length
# Outside-coverage tolerance: float noise of summing cell intersections, and reprojection
# noise along a small area's edges (0.3 mm of a 1 km edge is 3e-7 km²).
COVERAGE_TOLERANCE = 1e-6
COVERAGE_TOLERANCE_KM2 = 1e-5


# --- tenants, grants, keys ---------------------------------------------------------


def tenant_create(*, name: str, kind: str, time_zone: str = "Europe/Berlin") -> Tenant:
    with transaction.atomic():
        group = Group.objects.create(name=f"tenant:{name}")
        tenant = Tenant(name=name, kind=kind, time_zone=time_zone, group=group)
        tenant.full_clean()
        tenant.save()
    return tenant


def product_revoke(*, tenant: Tenant, product: Product) -> None:
    if not product_granted_list(tenant=tenant).filter(pk=product.pk).exists():
        return
    remove_perm("marketplace.order_product", tenant.group, product)
    audit(tenant=tenant, actor=None, action="product.revoked", target=product.code)


def region_unlicense(*, tenant: Tenant, region: LicensedRegion) -> None:
    if region not in selectors.licensed_region_list(tenant=tenant, at=None):
        return
    remove_perm("marketplace.order_in_region", tenant.group, region)
    audit(tenant=tenant, actor=None, action="region.unlicensed", target=region.name)


def tenant_entitlements_set(*, tenant: Tenant, products, regions) -> None:
    """Grant exactly these products and regions (account managers, in the admin)."""
    granted = set(product_granted_list(tenant=tenant))
    for product in set(products) - granted:
        product_grant(tenant=tenant, product=product)
    for product in granted - set(products):
        product_revoke(tenant=tenant, product=product)
    licensed = set(selectors.licensed_region_list(tenant=tenant, at=None))
    for region in set(regions) - licensed:
        region_license(tenant=tenant, region=region)
    for region in licensed - set(regions):
        region_unlicense(tenant=tenant, region=region)


def product_grant(
    *,
    tenant: Tenant,
    product: Product,
    valid_from: dt.datetime | None = None,
    valid_until: dt.datetime | None = None,
) -> None:
    """Let the tenant order the product, from valid_from until valid_until (each optional)."""
    if valid_from and valid_until and valid_until <= valid_from:
        raise ServiceError("valid_until must be after valid_from", code="invalid_period", field="valid_until")
    if valid_from or valid_until:
        ProductGrantPeriod.objects.update_or_create(
            tenant=tenant, product=product, defaults={"valid_from": valid_from, "valid_until": valid_until}
        )
    else:
        ProductGrantPeriod.objects.filter(tenant=tenant, product=product).delete()
    if product_granted_list(tenant=tenant).filter(pk=product.pk).exists():
        return
    assign_perm("marketplace.order_product", tenant.group, product)
    audit(tenant=tenant, actor=None, action="product.granted", target=product.code)


def licensed_region_create(
    *, name: str, geometry: MultiPolygon, valid_from: dt.datetime | None = None, valid_until: dt.datetime | None = None
) -> LicensedRegion:
    if valid_from and valid_until and valid_until <= valid_from:
        raise ServiceError("valid_until must be after valid_from", code="invalid_period", field="valid_until")
    return LicensedRegion.objects.create(name=name, geometry=geometry, valid_from=valid_from, valid_until=valid_until)


def region_license(*, tenant: Tenant, region: LicensedRegion) -> None:
    """Let the tenant order inside the region (during its validity)."""
    if region in selectors.licensed_region_list(tenant=tenant, at=None):
        return
    assign_perm("marketplace.order_in_region", tenant.group, region)
    audit(tenant=tenant, actor=None, action="region.licensed", target=region.name)


def _check_licence(*, tenant: Tenant, geometry: MultiPolygon, field: str) -> None:
    """An order must lie inside the regions the tenant is licensed for today."""
    regions = selectors.licensed_region_list(tenant=tenant, at=timezone.now())
    if not regions:
        raise NotPermitted(
            "your organisation has no licensed region to order in today; ask your account manager",
            code="no_licensed_region",
        )
    outside_km2 = selectors.km2_outside(geometry=geometry, regions=regions)
    if outside_km2 > LICENCE_TOLERANCE_KM2:
        names = ", ".join(region.name for region in regions)
        raise NotPermitted(
            f"{outside_km2:.3f} km² of the area lie outside your organisation's licensed regions ({names})",
            code="outside_licensed_region",
        )


def tenant_spending_limit_set(*, principal: "Principal", limit_cents: int | None) -> Tenant:
    """Orders that would bill more this month than the limit are refused (402); None: no limit."""
    tenant = principal.tenant
    before = tenant.monthly_spending_limit_cents
    tenant.monthly_spending_limit_cents = limit_cents
    tenant.save(update_fields=["monthly_spending_limit_cents"])
    audit(
        tenant=tenant,
        actor=principal.api_key,
        action="spending_limit.changed",
        target=tenant.name,
        before=before,
        after=limit_cents,
    )
    return tenant


def audit(*, tenant: Tenant, actor: ApiKey | None, action: str, target: str, **details) -> None:
    """Record who did what; the log is append-only."""
    AuditEvent.objects.create(tenant=tenant, actor=actor, action=action, target=target[:200], details=details)


@dataclass(frozen=True)
class Principal:
    """Who is calling: a tenant, acting with the role of the API key used."""

    tenant: Tenant
    role: str
    api_key: ApiKey
    is_authenticated = True
    is_anonymous = False


def api_key_create(
    *,
    tenant: Tenant,
    name: str,
    role: str,
    expires_at: dt.datetime | None = None,
    member: str | None = None,
    actor: ApiKey | None = None,
) -> tuple[ApiKey, str]:
    """Create a key and return it with its secret, which is never stored or shown again.

    member: the email of the member the key acts for; their key has their role, or viewer.
    """
    if role not in Role.values:
        raise ServiceError(f"role must be one of {', '.join(Role.values)}, got {role!r}", code="invalid_role")
    if expires_at is not None and expires_at <= timezone.now():
        raise ServiceError("expires_at must be in the future", code="expiry_in_past", field="expires_at")
    holder = None
    if member is not None:
        membership = Membership.objects.select_related("user").filter(tenant=tenant, user__email=member.lower()).first()
        if membership is None:
            raise ServiceError(
                f"{member} is not a member of your organisation; add them first (POST /api/v1/members/)",
                code="unknown_member",
                field="member",
            )
        if role not in _key_roles_of(membership.role):
            raise ServiceError(
                f"{member} is a {membership.role}; their key may be a {membership.role} or viewer key, not {role}",
                code="role_above_member",
                field="role",
            )
        holder = membership.user
    prefix = secrets.token_hex(API_KEY_PREFIX_BYTES)
    raw_key = f"ff_{prefix}_{secrets.token_urlsafe(API_KEY_SECRET_BYTES)}"
    api_key = ApiKey.objects.create(
        tenant=tenant,
        holder=holder,
        name=name,
        role=role,
        prefix=prefix,
        hashed_key=_hash_key(raw_key),
        expires_at=expires_at,
    )
    audit(
        tenant=tenant,
        actor=actor,
        action="api_key.created",
        target=f"{prefix} {name}",
        role=role,
        **({"member": holder.email} if holder else {}),
    )
    return api_key, raw_key


def _key_roles_of(member_role: str) -> set[str]:
    return {member_role, Role.VIEWER}


def api_key_rotate(*, api_key: ApiKey, actor: ApiKey | None = None) -> tuple[ApiKey, str]:
    """A new key with the old one's name, role and expiry; the old one is revoked at once."""
    if api_key.revoked_at is not None:
        raise Conflict("the key is revoked; create a new one instead", code="api_key_revoked")
    with transaction.atomic():
        api_key_revoke(api_key=api_key, actor=actor)
        expires_at = api_key.expires_at if api_key.expires_at and api_key.expires_at > timezone.now() else None
        return api_key_create(
            tenant=api_key.tenant,
            name=api_key.name,
            role=api_key.role,
            expires_at=expires_at,
            member=api_key.holder.email if api_key.holder else None,
            actor=actor,
        )


def api_key_authenticate(*, raw_key: str) -> Principal | None:
    """The principal for a presented key, or None if it is unknown, malformed or revoked."""
    parts = raw_key.split("_", 2)
    if len(parts) != 3 or parts[0] != "ff":
        return None
    api_key = ApiKey.objects.select_related("tenant", "tenant__group").filter(prefix=parts[1]).first()
    if api_key is None or api_key.revoked_at is not None:
        return None
    if api_key.expires_at is not None and api_key.expires_at <= timezone.now():
        return None
    # The key is 256 random bits, so one fast hash is enough; compare in constant time.
    if not hmac.compare_digest(api_key.hashed_key, _hash_key(raw_key)):
        return None
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
    return Principal(tenant=api_key.tenant, role=api_key.role, api_key=api_key)


def api_key_revoke(*, api_key: ApiKey, actor: ApiKey | None = None, reason: str | None = None) -> None:
    revoked = ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    if revoked:
        audit(
            tenant=api_key.tenant,
            actor=actor,
            action="api_key.revoked",
            target=f"{api_key.prefix} {api_key.name}",
            **({"reason": reason} if reason else {}),
        )
    api_key.refresh_from_db()


def _member_keys_revoke(*, principal: Principal, membership: Membership, keep_roles: set[str], reason: str) -> None:
    """Revoke the member's active keys whose role is not among keep_roles."""
    keys = ApiKey.objects.filter(tenant=membership.tenant, holder=membership.user, revoked_at__isnull=True)
    for api_key in keys.exclude(role__in=keep_roles):
        api_key_revoke(api_key=api_key, actor=principal.api_key, reason=reason)


def member_add(*, principal: Principal, email: str, role: str) -> Membership:
    """Add a person to the organisation with a role; an address can belong to one organisation only."""
    email = email.strip().lower()
    user = User.objects.filter(username=email).first()
    if user is not None and hasattr(user, "membership"):
        if user.membership.tenant_id == principal.tenant.pk:
            raise Conflict(f"{email} is already a member; change their role instead", code="already_a_member")
        raise Conflict(f"{email} belongs to another organisation", code="member_of_another_organisation")
    with transaction.atomic():
        if user is None:
            user = User.objects.create_user(username=email, email=email)  # no password: no login of its own
        membership = Membership.objects.create(user=user, tenant=principal.tenant, role=role)
        audit(tenant=principal.tenant, actor=principal.api_key, action="member.added", target=email, role=role)
    return membership


def member_change_role(*, principal: Principal, membership: Membership, role: str) -> Membership:
    before = membership.role
    if role != before:
        membership.role = role
        membership.save(update_fields=["role"])
        _member_keys_revoke(
            principal=principal, membership=membership, keep_roles=_key_roles_of(role), reason=f"{role} now"
        )
        audit(
            tenant=principal.tenant,
            actor=principal.api_key,
            action="member.role_changed",
            target=membership.user.email,
            before=before,
            after=role,
        )
    return membership


def member_remove(*, principal: Principal, membership: Membership) -> None:
    email = membership.user.email
    with transaction.atomic():
        _member_keys_revoke(principal=principal, membership=membership, keep_roles=set(), reason="member removed")
        membership.delete()
        audit(tenant=principal.tenant, actor=principal.api_key, action="member.removed", target=email)


def share_create(*, principal: Principal, viewer_prefix: str, area: Area | None = None, report: Report | None = None):
    """Show an area or a report to a viewer key of the same organisation."""
    viewer = ApiKey.objects.filter(tenant=principal.tenant, prefix=viewer_prefix, revoked_at__isnull=True).first()
    if viewer is None:
        raise ServiceError(f"your organisation has no active key {viewer_prefix!r}", code="unknown_key", field="viewer")
    if viewer.role != Role.VIEWER:
        raise ServiceError(
            f"key {viewer_prefix} is a {viewer.role} key, which sees everything already; share with viewer keys",
            code="not_a_viewer",
            field="viewer",
        )
    share, created = Share.objects.get_or_create(
        viewer=viewer, area=area, report=report, defaults={"shared_by": principal.api_key}
    )
    if created:
        target = f"area {area.pk}" if area else f"report {report.pk}"
        audit(tenant=principal.tenant, actor=principal.api_key, action="shared", target=target, viewer=viewer.prefix)
    return share


def _hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


# --- areas -------------------------------------------------------------------------


@dataclass(frozen=True)
class MeasuredArea:
    geometry: MultiPolygon
    area_km2: float
    cell_count: int


def area_measure(
    *,
    geometry: MultiPolygon,
    field: str = "geometry",
    in_grid: bool = True,
    policy: OrderPolicy | None = None,
    check: "Check | None" = None,
) -> MeasuredArea:
    """Check an area against the product's minimums, the size limit and, in_grid, the
    coverage of the grid cells (an od-matrix reads zones instead, and checks those)."""
    policy = policy or default_order_policy()
    check = check or _strictly
    cells = insights_selectors.area_cells(geometry=geometry)
    check("privacy_minimums", partial(_check_area_minimum, cells, policy=policy, field=field))
    if cells.area_km2 > settings.AREA_MAX_KM2:
        raise ServiceError(
            f"area must be at most {settings.AREA_MAX_KM2:g} km², got {cells.area_km2:.1f} km²",
            code="area_too_large",
            field=field,
        )
    outside_km2 = cells.area_km2 - cells.covered_km2
    if in_grid and outside_km2 > max(cells.area_km2 * COVERAGE_TOLERANCE, COVERAGE_TOLERANCE_KM2):
        raise ServiceError(
            f"{outside_km2:.3f} km² of the area's {cells.area_km2:.3f} km² lie outside the data coverage;"
            " draw the area inside the covered region",
            code="outside_coverage",
            field=field,
        )
    if in_grid:  # after the coverage: cells outside it are no cells at all
        check("privacy_minimums", partial(_check_cell_minimum, cells, policy=policy, field=field))
    return MeasuredArea(geometry=geometry, area_km2=cells.area_km2, cell_count=cells.cell_count)


def _check_area_minimum(cells, *, policy: OrderPolicy, field: str) -> None:
    """The product's smallest area: a report over a few blocks is not what we sell."""
    if cells.area_km2 < policy.min_area_km2:
        raise ServiceError(
            f"area must be at least {policy.min_area_km2:g} km², got {cells.area_km2:.3f} km²",
            code="area_too_small",
            field=field,
        )


def _check_cell_minimum(cells, *, policy: OrderPolicy, field: str) -> None:
    if cells.cell_count < policy.min_cells:
        raise ServiceError(
            f"area must cover at least {policy.min_cells} grid cells, it covers {cells.cell_count}",
            code="area_too_few_cells",
            field=field,
        )


def area_create(*, tenant: Tenant, name: str, geometry: MultiPolygon) -> Area:
    measured = area_measure(geometry=geometry)
    return Area.objects.create(
        tenant=tenant, name=name, geometry=geometry, area_km2=measured.area_km2, cell_count=measured.cell_count
    )


def area_delete(*, area: Area) -> None:
    area.delete()  # reports keep their own snapshot of the area


# --- report orders -----------------------------------------------------------------


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


Check = Callable[[str, Callable[[], object]], object]


def _strictly(name: str, check: Callable[[], object]) -> object:
    """An order's check: a refusal stops the order."""
    return check()


class _Checklist:
    """A quote's checks: each refusal is noted, and the quote goes on to the next check."""

    def __init__(self):
        self.results: list[dict] = []

    def __call__(self, name: str, check: Callable[[], object]) -> object:
        try:
            outcome = check()
        except ServiceError as refusal:
            # A check of several parts (e.g. both areas of a comparison) fails if any part does.
            self.results = [result for result in self.results if result["check"] != name or not result["passed"]]
            self.results.append({"check": name, "passed": False, "code": refusal.code, "detail": refusal.message})
            return None
        if not any(result["check"] == name for result in self.results):
            self.results.append({"check": name, "passed": True, "code": None, "detail": ""})
        return outcome


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
    product = _active_product(order.product_code)
    check("entitlement", partial(_check_entitlement, tenant=tenant, product=product))
    _check_breakdowns(order=order, product=product)
    _check_period(
        product=product, start=order.start, end=order.end, granularity=order.granularity, time_zone=tenant.time_zone
    )
    policy = product.order_policy()
    name, measured, area = _order_area(
        tenant=tenant,
        area_id=order.area_id,
        geometry=order.geometry,
        name=order.name,
        in_grid=PRODUCT_KINDS[product.code].in_grid,
        policy=policy,
        check=check,
    )
    comparison = _order_comparison(tenant=tenant, order=order, product=product, policy=policy, check=check)
    check("licensed_region", partial(_check_licence, tenant=tenant, geometry=measured.geometry, field="geometry"))
    if comparison.get("compare_geometry"):
        check(
            "licensed_region",
            partial(_check_licence, tenant=tenant, geometry=comparison["compare_geometry"], field="compare_geometry"),
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
    *, tenant: Tenant, plan: _Plan, order: ReportOrder, amount_cents: int, currency: str, check: Check
) -> int | None:
    """The checks against what the tenant has ordered and spent; returns the query budget left."""
    check("payment", partial(billing_services.check_payment_standing, tenant=tenant))
    check("reports_in_progress", partial(_check_reports_in_progress, tenant=tenant))
    budget_remaining = check(
        "fair_use",
        partial(
            _check_fair_use,
            tenant=tenant,
            product=plan.product,
            policy=plan.policy,
            queries=plan.queries(order),
        ),
    )
    check(
        "spending_limit",
        partial(_check_spending_limit, tenant=tenant, amount_cents=amount_cents, currency=currency),
    )
    return budget_remaining


def _check_spending_limit(*, tenant: Tenant, amount_cents: int, currency: str) -> None:
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


def _locked_for_orders(tenant: Tenant) -> None:
    """One order of a tenant at a time, until the transaction ends: two at once could each
    pass the privacy and spending checks against what was ordered before, but not against
    each other."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [TENANT_ORDER_LOCK, tenant.pk])


def report_quote(*, principal: Principal, order: ReportOrder, fingerprint: str) -> tuple[Quote, list[dict]]:
    """Price an order and run every check it would meet, without ordering: the quote, and each
    check with whether it passed (and if not, why). A badly formed order is refused as an
    order would be."""
    tenant = principal.tenant
    checks = _Checklist()
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
    tenant = principal.tenant
    if idempotency_key and len(idempotency_key) > IDEMPOTENCY_KEY_MAX_LENGTH:
        raise ServiceError(
            f"the Idempotency-Key header must be at most {IDEMPOTENCY_KEY_MAX_LENGTH} characters,"
            f" got {len(idempotency_key)}",
            code="invalid_idempotency_key",
        )
    if idempotency_key:
        existing = Report.objects.filter(tenant=tenant, idempotency_key=idempotency_key).first()
        if existing:
            return _replayed(existing, fingerprint), False

    plan = _order_plan(tenant=tenant, order=order, check=_strictly)
    now = timezone.now()
    try:
        with transaction.atomic():
            _locked_for_orders(tenant)
            draft = plan.draft(tenant=tenant, order=order)
            if quote_id is not None:
                quote = billing_services.quote_claim(
                    tenant=tenant, quote_id=quote_id, product_code=plan.product.code, fingerprint=order_fingerprint
                )
            else:
                quote = billing_services.quote_create(
                    tenant=tenant, report=draft, fingerprint=order_fingerprint, valid_for=dt.timedelta(0)
                )
            budget_remaining = _check_standing(
                tenant=tenant,
                plan=plan,
                order=order,
                amount_cents=quote.amount_cents,
                currency=quote.currency,
                check=_strictly,
            )
            draft.query_budget_remaining = budget_remaining
            draft.idempotency_key = idempotency_key
            draft.request_fingerprint = fingerprint
            draft.ordered_by_key = principal.api_key
            draft.queued_at = now
            draft.save()
            report = draft
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
            transaction.on_commit(partial(_enqueue, report.pk))
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


def _active_product(code: str) -> Product:
    product = Product.objects.filter(code=code, is_active=True).first()
    if product is None:
        raise ServiceError(f"unknown product {code!r}", code="unknown_product", field="product")
    return product


def _check_entitlement(*, tenant: Tenant, product: Product) -> None:
    code = product.code
    if not product_granted_list(tenant=tenant).filter(pk=product.pk).exists():
        raise NotPermitted(
            f"your organisation has no licence for the product {code!r}; ask your account manager",
            code="product_not_granted",
        )
    period = ProductGrantPeriod.objects.filter(tenant=tenant, product=product).first()
    if period and not period.covers(timezone.now()):
        raise NotPermitted(
            f"your organisation's licence for {code!r} is valid from {period.valid_from or 'the start'}"
            f" until {period.valid_until or 'no end'}, not now; ask your account manager",
            code="product_grant_not_valid",
        )


def _order_area(
    *,
    tenant: Tenant,
    area_id: uuid.UUID | None,
    geometry: MultiPolygon | None,
    name: str,
    fields: tuple[str, str] = ("area", "geometry"),
    in_grid: bool = True,
    policy: OrderPolicy | None = None,
    check: "Check | None" = None,
) -> tuple[str, MeasuredArea, Area | None]:
    area_field, geometry_field = fields
    if (area_id is None) == (geometry is None):
        raise ServiceError(
            f"give exactly one of {area_field} (a saved area's id) or {geometry_field}", code="area_or_geometry"
        )
    if geometry is not None:
        measured = area_measure(geometry=geometry, field=geometry_field, in_grid=in_grid, policy=policy, check=check)
        return name or "unnamed area", measured, None
    area = area_list(tenant=tenant).filter(pk=area_id).first()
    if area is None:
        raise ServiceError(f"no area with id {area_id}", code="does_not_exist", field=area_field)
    measured = MeasuredArea(geometry=area.geometry, area_km2=area.area_km2, cell_count=area.cell_count)
    return area.name, measured, area


def _order_comparison(
    *, tenant: Tenant, order: ReportOrder, product: Product, policy: OrderPolicy, check: "Check"
) -> dict:
    """The Report fields of a compare order's second period or second area; {} for other products."""
    wants_period = order.compare_start is not None or order.compare_end is not None
    wants_area = order.compare_area_id is not None or order.compare_geometry is not None
    if product.code != "compare":
        if wants_period or wants_area:
            raise ServiceError(
                f"{product.code} takes no comparison; order the compare product", code="comparison_not_offered"
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
    _check_period(
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


def _check_reports_in_progress(*, tenant: Tenant) -> None:
    in_progress = Report.objects.filter(tenant=tenant, status__in=[Report.Status.QUEUED, Report.Status.RUNNING]).count()
    if in_progress >= settings.MAX_REPORTS_IN_PROGRESS:
        raise TooManyRequests(
            f"your organisation has {in_progress} reports queued or running, the most at once"
            f" ({settings.MAX_REPORTS_IN_PROGRESS}); order again when one has finished",
            code="too_many_reports_in_progress",
            retry_after=settings.REPORTS_IN_PROGRESS_RETRY_SECONDS,
        )


def _same_data(product_code: str) -> list[str]:
    """The products computed from the same kind of data as this one."""
    kind = PRODUCT_KINDS[product_code]
    return [code for code, product_kind in PRODUCT_KINDS.items() if product_kind == kind]


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


def _check_fair_use(
    *,
    tenant: Tenant,
    product: Product,
    policy: OrderPolicy,
    queries: list[tuple[MultiPolygon, dt.datetime, dt.datetime]],
) -> int:
    """Count every area of the order against the tenant's fair-use quota over overlapping cells
    and periods (the order's own areas that overlap it too); returns what is left after it.
    Not a privacy defence: the release is."""
    same_data = _same_data(product.code)
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


# Reprojection noise along a licensed region's edge, not area outside it.
LICENCE_TOLERANCE_KM2 = 1e-6
# The first key of the advisory lock that serializes a tenant's orders (the second is the tenant id).
TENANT_ORDER_LOCK = 0x4F52  # "OR"


# Trips are counted between every pair: the matrix grows with the square of the zones.
MAX_OD_ZONES = 100


def _order_regions(*, order: ReportOrder, product: Product, geometry: MultiPolygon) -> list[str]:
    """The region codes the report keeps: the catchment's home regions to list, or the
    od-matrix's zones (by default, every zone the area overlaps)."""
    if product.code not in ("catchment", "od-matrix"):
        if order.regions:
            raise ServiceError(
                f"{product.code} takes no regions; catchment and od-matrix do", code="regions_not_offered"
            )
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
    if product.code == "catchment":
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


def _check_breakdowns(*, order: ReportOrder, product: Product) -> None:
    for breakdown in order.breakdowns:
        if breakdown not in product.breakdowns:
            offered = ", ".join(product.breakdowns) or "none"
            raise ServiceError(
                f"{product.code} cannot be broken down by {breakdown}; it offers: {offered}",
                code="breakdown_not_offered",
                field="breakdowns",
            )


def _check_period(
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
    coverage = insights_selectors.coverage(kind=PRODUCT_KINDS[product.code])
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


def _enqueue(report_id: uuid.UUID) -> None:
    try:
        insights_tasks.compute_report.delay(str(report_id))
    except Exception:  # the broker may be down: the order is safe in the database
        logger.warning("could not queue report %s; the sweeper will queue it again", report_id, exc_info=True)


# --- running reports (called by the worker) --------------------------------------------


class RunOutcome(enum.Enum):
    FINISHED = "finished"  # computed now, or already final
    BUSY = "busy"  # another worker holds the report


def report_run(*, report_id: str) -> RunOutcome:
    """Compute a report at most once at a time; safe to call again after a crash."""
    with _report_lock(report_id) as acquired:
        if not acquired:
            return RunOutcome.BUSY
        # Conditional, so a report cancelled a moment ago is not revived.
        claimed = (
            Report.objects.filter(pk=report_id)
            .exclude(status__in=Report.FINAL_STATUSES)
            .update(status=Report.Status.RUNNING, attempts=F("attempts") + 1, started_at=timezone.now(), progress=0.0)
        )
        if not claimed:
            return RunOutcome.FINISHED
        report = Report.objects.select_related("product").get(pk=report_id)
        coverage = insights_selectors.coverage(kind=PRODUCT_KINDS[report.product.code])
        if coverage is None:  # every release dropped since it was ordered (retention): nothing to compute from
            _report_finish(report_id, status=Report.Status.FAILED, error="the data this report covers is gone")
            return RunOutcome.FINISHED
        try:
            result = _report_result(report, version=coverage.latest_version, policy=coverage.policy)
        except DatabaseError:
            raise  # transient: the task retries
        except Exception as exc:
            logger.exception("report %s failed", report_id)
            _report_finish(
                report_id,
                status=Report.Status.FAILED,
                error=f"the report could not be computed ({type(exc).__name__}); our team was notified",
            )
            return RunOutcome.FINISHED
        _report_release(report, result, version=coverage.latest_version)
        return RunOutcome.FINISHED


def _report_result(report: Report, *, version: int, policy: ReleasePolicy) -> dict:
    """The engine's result for the report's product."""
    common = {
        "geometry": report.geometry,
        "start": report.start,
        "end": report.end,
        "granularity": report.granularity,
        "time_zone": report.time_zone,
        "version": version,
        "policy": policy,
        "on_progress": partial(_report_progress, report.pk),
    }
    if report.product.code == "compare":
        return compare_result(
            **common,
            comparison_start=report.compare_start,
            comparison_end=report.compare_end,
            comparison_geometry=report.compare_geometry,
        )
    if report.product.code == "dwell":
        return dwell_result(**common)
    if report.product.code == "catchment":
        return catchment_result(**common, regions=insights_selectors.region_names(report.regions))
    if report.product.code == "od-matrix":
        del common["geometry"]  # the zones say where
        return od_matrix_result(**common, zones=insights_selectors.region_names(report.regions))
    return footfall_result(**common, breakdowns=report.breakdowns)


def _report_release(report: Report, result: dict, *, version: int) -> None:
    """Store the result, bill it and log its release, together: a report is released and billed
    exactly when it succeeds."""
    with transaction.atomic():
        succeeded = _report_finish(
            report.pk,
            status=Report.Status.SUCCEEDED,
            result=result,
            result_rows=len(renderers.all_rows(result)),
            dataset_version=version,
        )
        if succeeded:
            report.refresh_from_db()
            billing_services.usage_record(report=report)
            Release.objects.create(
                report=report,
                tenant_id=report.tenant_id,
                ordered_by_key_id=report.ordered_by_key_id,
                product=report.product.code,
                geometry=report.geometry,
                start=report.start,
                end=report.end,
                dataset_version=version,
                parameters={
                    "granularity": report.granularity,
                    "time_zone": report.time_zone,
                    "breakdowns": report.breakdowns,
                    "regions": report.regions,
                    "compare_start": report.compare_start.isoformat() if report.compare_start else None,
                    "compare_end": report.compare_end.isoformat() if report.compare_end else None,
                    "compare_geometry": report.compare_geometry.geojson if report.compare_geometry else None,
                    "privacy": result["privacy"],
                },
                result_sha256=hashlib.sha256(
                    json.dumps(result, sort_keys=True, separators=(",", ":")).encode()
                ).hexdigest(),
            )


def _report_progress(report_id: str, fraction: float) -> None:
    # Kept under 1.0: the report is done only when its result is stored.
    Report.objects.filter(pk=report_id, status=Report.Status.RUNNING).update(progress=min(fraction, 0.99))


def _report_finish(report_id: str, **fields) -> bool:
    """Whether the report took the fields: a report cancelled while it ran stays cancelled.
    The buyer's webhooks are queued in the same transaction, and sent after it."""
    with transaction.atomic():
        finished = bool(
            Report.objects.filter(pk=report_id)
            .exclude(status__in=Report.FINAL_STATUSES)
            .update(finished_at=timezone.now(), progress=1.0, **fields)
        )
        if finished:
            _webhooks_queue(Report.objects.select_related("product").get(pk=report_id))
        return finished


# --- buyer webhooks ---------------------------------------------------------------------

WEBHOOK_SECRET_BYTES = 32
WEBHOOK_MAX_ATTEMPTS = 8
WEBHOOK_TIMEOUT_SECONDS = 10
WEBHOOK_RESPONSE_KEPT = 1000


def webhook_endpoint_create(*, principal: Principal, url: str, events: list[str]) -> WebhookEndpoint:
    """Register an endpoint; its secret is returned now and never shown again."""
    if not url.startswith("https://") and not settings.WEBHOOK_ALLOW_HTTP:
        raise ServiceError("a webhook URL must use https://", code="webhook_not_https", field="url")
    unknown = [event for event in events if event not in WebhookEndpoint.Event.values]
    if unknown or not events:
        raise ServiceError(
            f"events must be some of {', '.join(WebhookEndpoint.Event.values)}", code="unknown_event", field="events"
        )
    endpoint = WebhookEndpoint.objects.create(
        tenant=principal.tenant, url=url, events=sorted(set(events)), secret=secrets.token_hex(WEBHOOK_SECRET_BYTES)
    )
    audit(tenant=principal.tenant, actor=principal.api_key, action="webhook.created", target=url)
    return endpoint


def webhook_endpoint_delete(*, principal: Principal, endpoint: WebhookEndpoint) -> None:
    audit(tenant=principal.tenant, actor=principal.api_key, action="webhook.deleted", target=endpoint.url)
    endpoint.delete()


def webhook_signature(*, secret: str, timestamp: int, body: bytes) -> str:
    """The Footfall-Signature header: t=<unix time>,v1=<HMAC-SHA256 of "<t>.<body>"> (docs/webhooks.md)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def _webhooks_queue(report: Report) -> None:
    event = {Report.Status.SUCCEEDED: "report.succeeded", Report.Status.FAILED: "report.failed"}.get(report.status)
    if event is None:
        return
    for endpoint in WebhookEndpoint.objects.filter(tenant_id=report.tenant_id, is_active=True):
        if event not in endpoint.events:
            continue
        delivery = WebhookDelivery.objects.create(endpoint=endpoint, event=event, payload={})
        delivery.payload = {
            "id": str(delivery.pk),
            "type": event,
            "created_at": delivery.created_at.isoformat(),
            "data": {
                "report": {
                    "id": str(report.pk),
                    "product": report.product.code,
                    "status": report.status,
                    "finished_at": report.finished_at.isoformat() if report.finished_at else None,
                    "error": report.error or None,
                }
            },
        }
        delivery.save(update_fields=["payload"])
        transaction.on_commit(partial(_webhook_enqueue, delivery.pk))


def _webhook_enqueue(delivery_id: uuid.UUID, countdown: int = 0) -> None:
    try:
        marketplace_tasks.deliver_webhook.apply_async((str(delivery_id),), countdown=countdown)
    except Exception:  # the broker may be down: the delivery waits in the database
        logger.warning("could not queue webhook delivery %s", delivery_id, exc_info=True)


def webhook_deliver(*, delivery_id: str) -> int | None:
    """Send a delivery once; returns seconds to wait before the next try, or None when done."""
    delivery = WebhookDelivery.objects.select_related("endpoint").filter(pk=delivery_id).first()
    if delivery is None or delivery.delivered_at or delivery.gave_up_at:
        return None
    body = json.dumps(delivery.payload, separators=(",", ":")).encode()
    timestamp = int(timezone.now().timestamp())
    headers = {
        "Content-Type": "application/json",
        "Footfall-Signature": webhook_signature(secret=delivery.endpoint.secret, timestamp=timestamp, body=body),
        "Footfall-Delivery": str(delivery.pk),
    }
    delivery.attempts += 1
    try:
        response = requests.post(delivery.endpoint.url, data=body, headers=headers, timeout=WEBHOOK_TIMEOUT_SECONDS)
        delivery.last_status_code, delivery.last_response = response.status_code, response.text[:WEBHOOK_RESPONSE_KEPT]
        taken = 200 <= response.status_code < 300
    except requests.RequestException as exc:
        delivery.last_status_code, delivery.last_response = None, f"{type(exc).__name__}: {exc}"[:WEBHOOK_RESPONSE_KEPT]
        taken = False
    now = timezone.now()
    if taken:
        delivery.delivered_at = now
    elif delivery.attempts >= WEBHOOK_MAX_ATTEMPTS:
        delivery.gave_up_at = now
    delivery.save()
    if taken or delivery.gave_up_at:
        return None
    return min(10 * 2 ** (delivery.attempts - 1), 3600)  # 10 s, 20 s, 40 s, ... at most an hour


def report_rerun(*, report: Report) -> bool:
    """Account managers: queue a failed report again (say, after a fix). False if it had not failed."""
    with transaction.atomic():
        rerun = Report.objects.filter(pk=report.pk, status=Report.Status.FAILED).update(
            status=Report.Status.QUEUED, error="", progress=0.0, finished_at=None, queued_at=timezone.now()
        )
        if rerun:
            audit(tenant=report.tenant, actor=None, action="report.rerun", target=f"report {report.pk}")
            transaction.on_commit(partial(_enqueue, report.pk))
    return bool(rerun)


def reports_requeue_stuck() -> int:
    """Queue again what a lost message or a dead worker left behind; returns how many."""
    now = timezone.now()
    cutoff = now - dt.timedelta(seconds=settings.REPORT_REQUEUE_AFTER_SECONDS)
    stale_queued = list(
        Report.objects.filter(status=Report.Status.QUEUED, queued_at__lt=cutoff).values_list("pk", flat=True)
    )
    Report.objects.filter(pk__in=stale_queued).update(queued_at=now)
    orphaned = []
    for report_id in Report.objects.filter(status=Report.Status.RUNNING).values_list("pk", flat=True):
        # A free lock on a running report means no live worker holds it.
        with _report_lock(report_id) as acquired:
            if acquired and Report.objects.filter(pk=report_id, status=Report.Status.RUNNING).update(
                status=Report.Status.QUEUED, queued_at=now
            ):
                orphaned.append(report_id)
    for report_id in stale_queued + orphaned:
        _enqueue(report_id)
    return len(stale_queued) + len(orphaned)


def report_lock_key(report_id) -> int:
    """The advisory-lock key of a report: the top 64 bits of its UUID as a signed bigint."""
    key = uuid.UUID(str(report_id)).int >> 64
    return key - ((key >> 63) << 64)


@contextlib.contextmanager
def _report_lock(report_id) -> Iterator[bool]:
    """A session advisory lock: PostgreSQL frees it when the holder's connection dies."""
    key = report_lock_key(report_id)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        acquired = cursor.fetchone()[0]
    try:
        yield acquired
    finally:
        if acquired:
            with (
                contextlib.suppress(DatabaseError),
                connection.cursor() as cursor,
            ):  # a lost connection freed it already
                cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
