"""Credits on reports whose usage is on a finalized invoice become Stripe credit notes on that
invoice: refunded if it is paid, lowering what is due if it is open or uncollectible. Other
credits (their usage not invoiced yet) stay negative invoice items on the month's invoice.
localstripe has no credit notes: there, every credit is a negative invoice item."""

from django.db import transaction
from django.utils import timezone

from billing import stripe_gateway, tax
from billing.models import CreditNote, Invoice, UsageLine, UsageSync

FINALIZED = ("open", "paid", "uncollectible")


def credited_invoice(line: UsageLine) -> Invoice | None:
    """The finalized invoice that holds the usage the credit line credits, if any."""
    if line.kind != UsageLine.Kind.CREDIT or line.report_id is None:
        return None
    usage = UsageSync.objects.filter(line__report_id=line.report_id, line__kind=UsageLine.Kind.USAGE).first()
    if usage is None or not usage.stripe_invoice_id:
        return None
    return Invoice.objects.filter(stripe_invoice_id=usage.stripe_invoice_id, status__in=FINALIZED).first()


def credit_note_send(*, line: UsageLine, invoice: Invoice) -> CreditNote | None:
    """The credit note of a credit line on its invoice, made in Stripe and recorded with the
    line's outbox row synced; None where Stripe has no credit notes (localstripe)."""
    refund = invoice.status == "paid"
    try:
        note = stripe_gateway.credit_note_create(
            invoice_id=invoice.stripe_invoice_id,
            line_id=line.pk,
            amount_cents=-line.amount_cents,
            description=f"credit on report {line.report_id}: {line.reason}",
            refund=refund,
            tax_rate_id=tax.stripe_tax_rate(tax.treatment_of(line.tenant)),
        )
    except stripe_gateway.CreditNotesUnsupported:
        return None
    with transaction.atomic():
        recorded, _ = CreditNote.objects.update_or_create(
            line=line,
            defaults={
                "invoice": invoice,
                "kind": CreditNote.Kind.REFUND if refund else CreditNote.Kind.CREDIT,
                "amount_cents": note.get("subtotal", -line.amount_cents),
                "stripe_credit_note_id": note["id"],
                "number": note.get("number") or "",
                "pdf": note.get("pdf") or "",
                "last_error": "",
            },
        )
        UsageSync.objects.filter(pk=line.pk).update(
            state=UsageSync.State.SYNCED,
            stripe_invoice_id=invoice.stripe_invoice_id,
            synced_at=timezone.now(),
            lease_until=None,
            last_error="",
        )
    return recorded
