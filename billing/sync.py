"""Sending the ledger to Stripe: each usage line (and credit) becomes one invoice item,
exactly once, without holding a transaction while Stripe is asked.

A line's outbox row (billing.UsageSync) goes pending -> sending -> synced. Taking it
(`sending`, with a lease) is committed before Stripe is called; the answer is recorded in a
second transaction. A worker that dies in between leaves the line `sending`: after the lease
another worker sends it again with the same idempotency key (Stripe answers with the item it
made), and, as Stripe keeps keys for 24 hours only, looks for that item first. A failure of
one line (Stripe down, or refusing: a customer deleted in Stripe) is recorded on the line,
which backs off; other lines go on."""

import datetime as dt
import logging

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from billing import credit_notes, months, stripe_gateway, tax
from billing.models import BillingProfile, MonthClose, StripeAccount, UsageLine, UsageSync

logger = logging.getLogger(__name__)
MAX_SYNC_BACKOFF = dt.timedelta(hours=1)
HELD_RECHECK = dt.timedelta(minutes=15)


def stripe_account_ensure(*, tenant) -> StripeAccount:
    """The tenant's Stripe customer and subscription, made on first need. Stripe is asked
    outside any transaction; its idempotency keys make a concurrent or retried maker get the
    same customer, and the account row is unique per tenant."""
    account = StripeAccount.objects.filter(tenant=tenant).first()
    if account:
        return account
    profile = BillingProfile.objects.filter(tenant=tenant).first()
    customer_id, subscription_id = stripe_gateway.customer_create(
        tenant_id=tenant.pk, name=tenant.name, profile=tax.stripe_customer_fields(profile)
    )
    if profile and profile.vat_id:
        stripe_gateway.customer_update(customer_id=customer_id, profile={}, vat_id=profile.vat_id)
    with transaction.atomic():
        account, _ = StripeAccount.objects.get_or_create(
            tenant=tenant, defaults={"customer_id": customer_id, "subscription_id": subscription_id}
        )
        if profile:
            BillingProfile.objects.filter(pk=profile.pk).update(synced_to_stripe=True)
    return account


def profile_push(*, tenant) -> None:
    """The tenant's billing profile (e-mail, address, VAT ID) to its Stripe customer, if it has one."""
    account = StripeAccount.objects.filter(tenant=tenant).first()
    profile = BillingProfile.objects.filter(tenant=tenant).first()
    if account is None or profile is None:
        return
    stripe_gateway.customer_update(
        customer_id=account.customer_id, profile=tax.stripe_customer_fields(profile), vat_id=profile.vat_id
    )
    BillingProfile.objects.filter(pk=profile.pk).update(synced_to_stripe=True)


def _take(line_id: int) -> tuple[UsageSync | None, bool, str]:
    """Take the line for sending (committed): (its row, whether an earlier attempt's outcome
    is unknown, what happened if not taken)."""
    now = timezone.now()
    with transaction.atomic():
        sync = (
            UsageSync.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("line__tenant")
            .filter(pk=line_id)
            .first()
        )
        if sync is None:
            return None, False, "done"  # another worker holds the row this instant
        if sync.state == UsageSync.State.SYNCED:
            return None, False, "done"
        if sync.state == UsageSync.State.SENDING and sync.lease_until and sync.lease_until > now:
            return None, False, "leased"
        waiting_for = _held_by(sync.line)
        if waiting_for:
            sync.next_attempt_at = now + HELD_RECHECK
            sync.last_error = f"waits for {waiting_for:%Y-%m} to be closed (its invoice first)"
            sync.save(update_fields=["next_attempt_at", "last_error"])
            return None, False, "held"
        # The outcome of the last attempt is unknown if its worker died (lease ran out) or the
        # connection failed after the request may have reached Stripe.
        unknown = sync.state == UsageSync.State.SENDING or sync.last_error.startswith("StripeUnavailable")
        sync.state = UsageSync.State.SENDING
        sync.lease_until = now + dt.timedelta(seconds=settings.BILLING_SYNC_LEASE_SECONDS)
        sync.save(update_fields=["state", "lease_until"])
    return sync, unknown, ""


def _held_by(line: UsageLine):
    """The earlier month, not yet closed for the tenant, whose lines are not all invoiced: a
    line of a later month waits for its invoice, so that the invoice (of the subscription's
    pending items) holds only its own month's lines. None: the line may go."""
    month = months.line_month(line)
    earlier = (
        UsageLine.objects.filter(months.before_month(month), tenant_id=line.tenant_id)
        .filter(Q(sync__isnull=True) | Q(sync__stripe_invoice_id=""))
        .values_list("kind", "created_at", "month")
    )
    waiting = {first if kind == "minimum" else months.month_of(created) for kind, created, first in earlier}
    if not waiting:
        return None
    closed = set(
        MonthClose.objects.filter(tenant_id=line.tenant_id, closed_at__isnull=False, month__in=waiting).values_list(
            "month", flat=True
        )
    )
    return min(waiting - closed, default=None)


def usage_sync(*, line_id: int) -> str:
    """Send one usage line to Stripe as an invoice item, exactly once. Returns what happened:
    synced, retry (failed, backing off), held (waits for an earlier month's invoice), leased
    (another worker is sending it), done (synced before), off (no Stripe key)."""
    if not settings.STRIPE_SECRET_KEY:
        return "off"
    sync, unknown, outcome = _take(line_id)
    if sync is None:
        return outcome
    line = sync.line
    try:
        account = stripe_account_ensure(tenant=line.tenant)
        invoice = credit_notes.credited_invoice(line)
        if invoice is not None and credit_notes.credit_note_send(line=line, invoice=invoice):
            return "synced"  # a credit note on the invoice that holds the credited usage
        item_id = (
            stripe_gateway.invoice_item_find(customer_id=account.customer_id, line_id=line.pk) if unknown else None
        )
        if item_id is None:
            item_id = stripe_gateway.invoice_item_create(
                customer_id=account.customer_id,
                subscription_id=account.subscription_id,
                line_id=line.pk,
                month=f"{months.line_month(line):%Y-%m}",
                amount_cents=line.amount_cents,
                currency=line.currency,
                description=_item_description(line),
                tax_rate_id=tax.stripe_tax_rate(tax.treatment_of(line.tenant)),
            )
    except Exception as error:  # noqa: BLE001 - whatever went wrong is this line's, not the sweep's
        if not isinstance(error, stripe_gateway.StripeFailed):
            logger.exception("sending usage line %s to Stripe failed", line_id)
        _sync_later(line_id, error)
        return "retry"
    with transaction.atomic():
        _synced(UsageSync.objects.select_for_update().get(pk=line_id), item_id)
    return "synced"


def _synced(sync: UsageSync, item_id: str) -> None:
    sync.state = UsageSync.State.SYNCED
    sync.stripe_invoice_item_id = item_id
    sync.synced_at = timezone.now()
    sync.lease_until = None
    sync.last_error = ""
    sync.save(update_fields=["state", "stripe_invoice_item_id", "synced_at", "lease_until", "last_error"])


def _item_description(line: UsageLine) -> str:
    if line.kind == UsageLine.Kind.MINIMUM:
        return f"{line.product}: top-up to the monthly minimum of {line.month:%Y-%m}"
    if line.kind == UsageLine.Kind.CREDIT:
        return f"credit on report {line.report_id}: {line.reason}"[:500]
    return f"{line.product} report {line.report_id}: {line.quantity} {line.unit}"


def _sync_later(line_id: int, error: Exception) -> None:
    """Back to pending with the error, 2, 4, 8... minutes later, at most an hour."""
    with transaction.atomic():
        sync = UsageSync.objects.select_for_update().get(pk=line_id)
        sync.state = UsageSync.State.PENDING
        sync.lease_until = None
        sync.attempts += 1
        sync.next_attempt_at = timezone.now() + min(dt.timedelta(minutes=2**sync.attempts), MAX_SYNC_BACKOFF)
        sync.last_error = f"{type(error).__name__}: {error}"[:2000]
        sync.save(update_fields=["state", "lease_until", "attempts", "next_attempt_at", "last_error"])


def usage_lines_due() -> list[int]:
    """Lines waiting for Stripe whose next try is due, and lines whose sender's lease ran
    out, oldest first."""
    now = timezone.now()
    due = Q(state=UsageSync.State.PENDING, next_attempt_at__lte=now) | Q(
        state=UsageSync.State.SENDING, lease_until__lte=now
    )
    return list(UsageSync.objects.filter(due).order_by("next_attempt_at").values_list("pk", flat=True)[:500])


def usage_sync_due() -> int:
    """The outbox sweep: send every line that is due; one line's failure stops no other.
    Returns how many were tried."""
    due = usage_lines_due()
    for line_id in due:
        usage_sync(line_id=line_id)
    return len(due)
