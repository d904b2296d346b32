"""Writes of the buyer-facing domain, one module per concern:

- accounts: organisations, the products and regions they may order, their spending limit
- keys: API keys and their roles, members, shares with viewer keys
- areas: saved areas, measured against the minimums and the data's coverage
- orders: quotes and orders (order_checks: the checks they meet; checks: how they are run)
- runs: computing, storing, billing and logging a report (called by the worker)
- webhooks: buyer webhooks and their delivery (webhook_destinations: where one may be sent, and how)
- audit: the append-only audit log
- warmup: after a release, the areas buyers re-order computed once into the shared months

Callers import from here; the modules import each other directly."""

from marketplace.services.accounts import (
    licensed_region_create,
    licensed_region_update,
    product_grant,
    product_revoke,
    region_license,
    region_unlicense,
    tenant_create,
    tenant_entitlements_set,
    tenant_spending_limit_set,
)
from marketplace.services.areas import MeasuredArea, area_create, area_delete, area_measure
from marketplace.services.audit import audit
from marketplace.services.keys import (
    Principal,
    api_key_authenticate,
    api_key_create,
    api_key_revoke,
    api_key_rotate,
    api_key_update,
    member_add,
    member_change_role,
    member_remove,
    membership_create,
    share_create,
    staff_principal,
)
from marketplace.services.orders import ReportOrder, report_cancel, report_create, report_quote
from marketplace.services.runs import (
    RunOutcome,
    database_error_is_transient,
    report_give_up,
    report_lock_key,
    report_rerun,
    report_run,
    reports_requeue_stuck,
)
from marketplace.services.warmup import ordered_areas_warm, release_warm_up_queue
from marketplace.services.webhooks import (
    webhook_deliver,
    webhook_deliveries_requeue,
    webhook_endpoint_create,
    webhook_endpoint_delete,
    webhook_signature,
    webhook_test_send,
)

__all__ = [
    "MeasuredArea",
    "Principal",
    "ReportOrder",
    "RunOutcome",
    "api_key_authenticate",
    "api_key_create",
    "api_key_revoke",
    "api_key_rotate",
    "api_key_update",
    "area_create",
    "area_delete",
    "area_measure",
    "audit",
    "database_error_is_transient",
    "licensed_region_create",
    "licensed_region_update",
    "ordered_areas_warm",
    "member_add",
    "member_change_role",
    "member_remove",
    "membership_create",
    "product_grant",
    "product_revoke",
    "region_license",
    "region_unlicense",
    "release_warm_up_queue",
    "report_cancel",
    "report_create",
    "report_give_up",
    "report_lock_key",
    "report_quote",
    "report_rerun",
    "report_run",
    "reports_requeue_stuck",
    "share_create",
    "staff_principal",
    "tenant_create",
    "tenant_entitlements_set",
    "tenant_spending_limit_set",
    "webhook_deliver",
    "webhook_deliveries_requeue",
    "webhook_endpoint_create",
    "webhook_endpoint_delete",
    "webhook_signature",
    "webhook_test_send",
]
