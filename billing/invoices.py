"""Stripe's invoices as mirrored here: from the month's close and from webhooks, whose order
is Stripe's object state (an invoice's status only moves forward), not the events' order; and
whether a tenant's unpaid invoices stop its new orders."""

import datetime as dt

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from billing import stripe_gateway
from billing.models import Invoice, StripeAccount, StripeEvent, UsageSync
from marketplace.exceptions import NotPermitted

# An invoice goes draft -> open -> paid, void or uncollectible (and uncollectible -> paid or
# void); never back. News of a lower rank than the copy's is older news, whatever its time.
STATUS_RANK = {"draft": 0, "open": 1, "uncollectible": 2, "paid": 3, "void": 3}


def invoice_mirror(*, invoice: dict, tenant, changed: int, payment_failed: bool = False) -> Invoice:
    """Keep the local copy of a Stripe invoice as far along as the furthest news of it: news
    of an earlier status changes nothing, nor news of the same status older than the copy's
    (`changed`: Stripe's time of the event or fetch). Its lines' usage lines learn which
    invoice holds them. `invoice` must hold all its lines (stripe_gateway.invoice_complete)."""
    status = invoice.get("status") or "draft"
    with transaction.atomic():
        local, created = Invoice.objects.select_for_update().get_or_create(
            stripe_invoice_id=invoice["id"],
            defaults={
                "tenant": tenant,
                "status": status,
                "currency": (invoice.get("currency") or "eur").upper(),
                "amount_due_cents": invoice.get("amount_due") or 0,
                "created_at": _instant(invoice.get("created")),
            },
        )
        if not created:
            old, new = STATUS_RANK.get(local.status, 0), STATUS_RANK.get(status, 0)
            if new < old or (new == old and changed < local.stripe_updated):
                return local
        local.status = status
        local.number = invoice.get("number") or local.number
        local.amount_due_cents = invoice.get("amount_due") or 0
        local.amount_paid_cents = invoice.get("amount_paid") or 0
        local.hosted_invoice_url = invoice.get("hosted_invoice_url") or local.hosted_invoice_url
        local.invoice_pdf = invoice.get("invoice_pdf") or local.invoice_pdf
        local.subtotal_cents = invoice.get("subtotal") or 0
        local.tax_cents = stripe_gateway.invoice_tax_cents(invoice)
        local.total_cents = invoice.get("total") or 0
        local.due_at = _instant(invoice["due_date"]) if invoice.get("due_date") else None
        month = (invoice.get("metadata") or {}).get(stripe_gateway.MONTH_METADATA)
        if month and local.month is None:
            local.month = dt.datetime.strptime(month, "%Y-%m").date()
        local.stripe_updated = max(changed, local.stripe_updated)
        if status == "paid":
            paid_at = (invoice.get("status_transitions") or {}).get("paid_at")
            local.paid_at = _instant(paid_at) if paid_at else timezone.now()
            local.payment_failed_at = None
        elif payment_failed and local.payment_failed_at is None:
            local.payment_failed_at = timezone.now()
        local.save()
        line_ids, item_ids = set(), set()
        for line in (invoice.get("lines") or {}).get("data", []):
            line_id, item_id = stripe_gateway.line_usage(line)
            if line_id and line_id.isdigit():
                line_ids.add(int(line_id))
            if item_id:
                item_ids.add(item_id)
        if line_ids or item_ids:
            UsageSync.objects.filter(
                Q(pk__in=line_ids) | Q(stripe_invoice_item_id__in=item_ids), line__tenant=tenant
            ).update(stripe_invoice_id=invoice["id"])
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
    "invoice.overdue",
}
SUBSCRIPTION_EVENTS = {
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
}


def stripe_event_receive(*, event: dict) -> bool:
    """Store a verified webhook event as received, then apply it, once: a second delivery of
    the same event changes nothing. Returns whether it was new. An invoice with more lines
    than its event embeds is completed from Stripe before any transaction is opened."""
    with transaction.atomic():
        stored, created = StripeEvent.objects.get_or_create(
            id=event["id"], defaults={"type": event["type"], "payload": event}
        )
    if stored.processed_at is not None:
        return False
    subject = (event.get("data") or {}).get("object") or {}
    if event["type"] in INVOICE_EVENTS and subject.get("id"):
        subject = stripe_gateway.invoice_complete(subject)
    with transaction.atomic():
        stored = StripeEvent.objects.select_for_update().get(pk=stored.pk)
        if stored.processed_at is not None:
            return False
        _apply(event, subject)
        stored.processed_at = timezone.now()
        stored.save(update_fields=["processed_at"])
    return created


def _apply(event: dict, subject: dict) -> None:
    account = StripeAccount.objects.select_related("tenant").filter(customer_id=subject.get("customer")).first()
    if account is None:
        return  # not one of our customers' (or not about a customer): kept, nothing to do
    if event["type"] in INVOICE_EVENTS:
        invoice_mirror(
            invoice=subject,
            tenant=account.tenant,
            changed=event.get("created", 0),
            payment_failed=event["type"] in ("invoice.payment_failed", "invoice.overdue"),
        )
    elif event["type"] in SUBSCRIPTION_EVENTS:
        account.subscription_status = "canceled" if event["type"].endswith("deleted") else subject.get("status", "")
        account.save(update_fields=["subscription_status"])


_REFUSING_INVOICE = """
    SELECT id FROM billing_invoice
    WHERE tenant_id = %(tenant)s
      AND (status = 'uncollectible'
           OR (status = 'open' AND (payment_failed_at <= %(overdue_since)s OR due_at <= %(overdue_since)s)))
    ORDER BY status DESC, created_at
    LIMIT 1
"""


def check_payment_standing(*, tenant) -> None:
    """New orders are refused while an invoice is uncollectible, or open and overdue: its
    payment failed, or its due date passed, longer than the grace period ago."""
    overdue_since = timezone.now() - dt.timedelta(days=settings.BILLING_PAYMENT_GRACE_DAYS)
    # Both kinds in one query: the oldest uncollectible invoice ("uncollectible" sorts after
    # "open") is named first, else the oldest overdue one. In SQL, its id alone: every order
    # asks, and rarely finds one.
    with connection.cursor() as cursor:
        cursor.execute(_REFUSING_INVOICE, {"tenant": tenant.pk, "overdue_since": overdue_since})
        row = cursor.fetchone()
    refusing = None if row is None else Invoice.objects.get(pk=row[0])
    uncollectible = refusing if refusing and refusing.status == "uncollectible" else None
    if uncollectible:
        raise NotPermitted(
            f"invoice {uncollectible.number or uncollectible.stripe_invoice_id}"
            f" ({uncollectible.amount_due_cents / 100:.2f} {uncollectible.currency}) was written off as"
            " uncollectible; new orders are possible again once it is paid",
            code="payment_overdue",
        )
    overdue = refusing
    if overdue:
        since = overdue.payment_failed_at or overdue.due_at
        what = "failed" if overdue.payment_failed_at else "was due"
        raise NotPermitted(
            f"the payment of invoice {overdue.number or overdue.stripe_invoice_id}"
            f" ({overdue.amount_due_cents / 100:.2f} {overdue.currency}) {what} on"
            f" {since:%Y-%m-%d} and is overdue; new orders are possible again once it is paid",
            code="payment_overdue",
        )


def invoice_list(*, tenant):
    return Invoice.objects.filter(tenant=tenant).order_by("-created_at")
