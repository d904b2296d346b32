"""Organisations and what they may order: products granted, regions licensed, their spending limit."""

import datetime as dt

from django.contrib.auth.models import Group, User
from django.contrib.gis.geos import MultiPolygon
from django.db import transaction
from guardian.shortcuts import assign_perm, get_groups_with_perms, remove_perm

from marketplace import selectors
from marketplace.exceptions import ServiceError
from marketplace.models import LicensedRegion, Product, ProductGrantPeriod, Tenant
from marketplace.selectors import product_granted_list
from marketplace.services.audit import audit
from marketplace.services.keys import Principal


def tenant_create(*, name: str, kind: str, time_zone: str = "Europe/Berlin") -> Tenant:
    with transaction.atomic():
        group = Group.objects.create(name=f"tenant:{name}")
        tenant = Tenant(name=name, kind=kind, time_zone=time_zone, group=group)
        tenant.full_clean()
        tenant.save()
    return tenant


def product_grant(
    *,
    tenant: Tenant,
    product: Product,
    valid_from: dt.datetime | None = None,
    valid_until: dt.datetime | None = None,
    staff_user: User | None = None,
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
    audit(tenant=tenant, actor=None, staff_user=staff_user, action="product.granted", target=product.code)


def product_revoke(*, tenant: Tenant, product: Product, staff_user: User | None = None) -> None:
    if not product_granted_list(tenant=tenant).filter(pk=product.pk).exists():
        return
    remove_perm("marketplace.order_product", tenant.group, product)
    audit(tenant=tenant, actor=None, staff_user=staff_user, action="product.revoked", target=product.code)


def licensed_region_create(
    *, name: str, geometry: MultiPolygon, valid_from: dt.datetime | None = None, valid_until: dt.datetime | None = None
) -> LicensedRegion:
    if valid_from and valid_until and valid_until <= valid_from:
        raise ServiceError("valid_until must be after valid_from", code="invalid_period", field="valid_until")
    return LicensedRegion.objects.create(name=name, geometry=geometry, valid_from=valid_from, valid_until=valid_until)


def licensed_region_update(*, region: LicensedRegion, changed: list[str], staff_user: User | None = None) -> None:
    """Save a region's new name, boundary or validity; logged for every tenant licensed in it."""
    if region.valid_from and region.valid_until and region.valid_until <= region.valid_from:
        raise ServiceError("valid_until must be after valid_from", code="invalid_period", field="valid_until")
    region.save()
    if not changed:
        return
    groups = get_groups_with_perms(region, attach_perms=True)
    for tenant in Tenant.objects.filter(
        group__in=[group for group, perms in groups.items() if "order_in_region" in perms]
    ):
        audit(
            tenant=tenant,
            actor=None,
            staff_user=staff_user,
            action="region.changed",
            target=region.name,
            fields=changed,
        )


def region_license(*, tenant: Tenant, region: LicensedRegion, staff_user: User | None = None) -> None:
    """Let the tenant order inside the region (during its validity)."""
    if region in selectors.licensed_region_list(tenant=tenant, at=None):
        return
    assign_perm("marketplace.order_in_region", tenant.group, region)
    audit(tenant=tenant, actor=None, staff_user=staff_user, action="region.licensed", target=region.name)


def region_unlicense(*, tenant: Tenant, region: LicensedRegion, staff_user: User | None = None) -> None:
    if region not in selectors.licensed_region_list(tenant=tenant, at=None):
        return
    remove_perm("marketplace.order_in_region", tenant.group, region)
    audit(tenant=tenant, actor=None, staff_user=staff_user, action="region.unlicensed", target=region.name)


def tenant_entitlements_set(*, tenant: Tenant, products, regions, staff_user: User | None = None) -> None:
    """Grant exactly these products and regions (account managers, in the admin)."""
    granted = set(product_granted_list(tenant=tenant))
    for product in set(products) - granted:
        product_grant(tenant=tenant, product=product, staff_user=staff_user)
    for product in granted - set(products):
        product_revoke(tenant=tenant, product=product, staff_user=staff_user)
    licensed = set(selectors.licensed_region_list(tenant=tenant, at=None))
    for region in set(regions) - licensed:
        region_license(tenant=tenant, region=region, staff_user=staff_user)
    for region in licensed - set(regions):
        region_unlicense(tenant=tenant, region=region, staff_user=staff_user)


def tenant_spending_limit_set(*, principal: Principal, limit_cents: int | None) -> Tenant:
    """Orders that would bill more this month than the limit are refused (402); None: no limit."""
    tenant = principal.tenant
    before = Tenant.objects.values_list("monthly_spending_limit_cents", flat=True).get(pk=tenant.pk)
    tenant.monthly_spending_limit_cents = limit_cents
    tenant.save(update_fields=["monthly_spending_limit_cents"])
    audit(
        tenant=tenant,
        actor=principal.api_key,
        staff_user=principal.staff_user,
        action="spending_limit.changed",
        target=tenant.name,
        before=before,
        after=limit_cents,
    )
    return tenant
