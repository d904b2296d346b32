"""Reconciliation of a billing month with Stripe: amounts line by line, and months and
invoices: each line on its own month's invoice, on one invoice only, invoices' totals equal
to the sums of their lines (net and VAT), the mirror as Stripe has it, nothing in Stripe the
ledger does not know."""

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass

from billing import stripe_gateway, tax
from billing.models import CreditNote, Invoice, MonthClose, StripeAccount, UsageLine, UsageSync
from billing.selectors import all_lines_in_month


@dataclass(frozen=True)
class Difference:
    tenant: str
    usage_line: str  # the line's id, or "" for an invoice's difference
    invoice: str
    what: str
    ledger_cents: int | None
    stripe_cents: int | None

    def csv(self) -> str:
        values = [
            self.tenant,
            self.usage_line,
            self.invoice,
            self.what.replace(",", ";"),
            self.ledger_cents,
            self.stripe_cents,
        ]
        return ",".join("" if value is None else str(value) for value in values)


HEADER = "tenant,usage_line,invoice,difference,ledger_cents,stripe_cents"


def reconcile_month(month: dt.date) -> list[Difference]:
    """Every difference between the ledger's lines of the month and Stripe (raises
    StripeFailed if Stripe cannot be read)."""
    lines = all_lines_in_month(month).select_related("tenant")
    differences = []
    for account in StripeAccount.objects.select_related("tenant").order_by("tenant__name"):
        differences += _tenant(account, month, lines.filter(tenant=account.tenant))
    for line in lines.filter(tenant__stripe_account__isnull=True):
        differences.append(_d(line.tenant.name, line, "", "not sent to Stripe (no customer yet)", line.amount_cents))
    return differences


def _d(tenant: str, line, invoice: str, what: str, ledger=None, stripe=None) -> Difference:
    return Difference(
        tenant, str(line.pk) if isinstance(line, UsageLine) else str(line or ""), invoice, what, ledger, stripe
    )


def _tenant(account, month: dt.date, lines) -> list[Difference]:
    name = account.tenant.name
    label = f"{month:%Y-%m}"
    rate = tax.rate_of(tax.treatment_of(account.tenant))
    invoices = stripe_gateway.invoices_of(customer_id=account.customer_id)
    pending = stripe_gateway.pending_items(account.customer_id)
    rows: list[Difference] = []

    # Where Stripe has each usage line: (item, invoice or None, amount, currency, month it names).
    in_stripe: dict[str, list[dict]] = defaultdict(list)
    for invoice in invoices:
        if invoice.get("status") == "void":
            continue
        for line in invoice["lines"]["data"]:
            line_id, item_id = stripe_gateway.line_usage(line)
            if line_id:
                in_stripe[line_id].append({**_item(line, item_id), "invoice": invoice})
    for item in pending:
        line_id = (item.get("metadata") or {}).get(stripe_gateway.USAGE_LINE_METADATA)
        if line_id:
            in_stripe[line_id].append({**_item(item, item["id"]), "invoice": None})

    closed = MonthClose.objects.filter(tenant=account.tenant, month=month, closed_at__isnull=False).exists()
    syncs = {sync.pk: sync for sync in UsageSync.objects.filter(line__in=lines)}
    ledger_by_invoice: dict[str, list[UsageLine]] = defaultdict(list)
    notes = {note.line_id: note for note in CreditNote.objects.filter(line__in=lines)}
    for line in lines:
        sync = syncs.get(line.pk)
        if line.pk in notes:  # a credit note on an earlier invoice, not an invoice item
            note = notes[line.pk]
            if not note.stripe_credit_note_id or note.amount_cents != -line.amount_cents:
                rows.append(
                    _d(
                        name,
                        line,
                        note.invoice.stripe_invoice_id,
                        "credit note missing or of another amount",
                        line.amount_cents,
                        -note.amount_cents,
                    )
                )
            continue
        found = in_stripe.pop(str(line.pk), [])
        if not found:
            if sync is None or sync.state != UsageSync.State.SYNCED:
                tries = f"{sync.attempts} tries; last error: {sync.last_error}" if sync else "no outbox row"
                rows.append(_d(name, line, "", f"not sent to Stripe ({tries})", line.amount_cents))
            else:
                rows.append(_d(name, line, "", "missing in Stripe", line.amount_cents))
            continue
        if len(found) > 1:
            where = " ".join(each["invoice"]["id"] if each["invoice"] else f"pending {each['item']}" for each in found)
            rows.append(_d(name, line, "", f"in Stripe {len(found)} times: {where}", line.amount_cents))
        item = found[0]
        invoice = item["invoice"]
        invoice_id = invoice["id"] if invoice else ""
        if item["amount"] != line.amount_cents or item["currency"] != line.currency:
            rows.append(
                _d(name, line, invoice_id, f"amount differs ({item['currency']})", line.amount_cents, item["amount"])
            )
        if item["month"] and item["month"] != label:
            rows.append(_d(name, line, invoice_id, f"its Stripe item names month {item['month']}", line.amount_cents))
        if invoice is None:
            if closed:
                rows.append(_d(name, line, "", "month closed but the line is on no invoice", line.amount_cents))
            continue
        invoice_month = (invoice.get("metadata") or {}).get(stripe_gateway.MONTH_METADATA)
        if invoice_month != label:
            rows.append(
                _d(name, line, invoice_id, f"on the invoice of {invoice_month or 'no month'}", line.amount_cents)
            )
        if sync and sync.stripe_invoice_id != invoice_id:
            rows.append(_d(name, line, invoice_id, f"the ledger has it on {sync.stripe_invoice_id or 'no invoice'}"))
        ledger_by_invoice[invoice_id].append(line)

    # Stripe's items naming lines this tenant's month does not have.
    known = {str(pk) for pk in UsageLine.objects.filter(tenant=account.tenant).values_list("pk", flat=True)}
    for line_id, found in in_stripe.items():
        for item in found:
            if line_id in known:
                continue  # a line of another month of the tenant: that month's reconciliation
            invoice_id = item["invoice"]["id"] if item["invoice"] else ""
            rows.append(
                Difference(name, line_id, invoice_id, f"only in Stripe (item {item['item']})", None, item["amount"])
            )

    # The month's invoices: totals are their lines' sums, VAT is the lines' VAT, the mirror agrees.
    mirrors = {invoice.stripe_invoice_id: invoice for invoice in Invoice.objects.filter(tenant=account.tenant)}
    for invoice in invoices:
        if (invoice.get("metadata") or {}).get(stripe_gateway.MONTH_METADATA) != label or invoice.get(
            "status"
        ) == "void":
            continue
        stripe_lines = invoice["lines"]["data"]
        subtotal = sum(line["amount"] for line in stripe_lines)
        if invoice.get("subtotal") is not None and invoice["subtotal"] != subtotal:
            rows.append(
                Difference(
                    name, "", invoice["id"], "subtotal is not the sum of its lines", subtotal, invoice["subtotal"]
                )
            )
        ours = ledger_by_invoice.get(invoice["id"], [])
        ledger_net = sum(line.amount_cents for line in ours)
        if ledger_net != subtotal:
            rows.append(
                Difference(name, "", invoice["id"], "invoice net differs from its ledger lines", ledger_net, subtotal)
            )
        ledger_vat = sum(tax.vat_cents(line.amount_cents, rate) for line in ours)
        stripe_vat = stripe_gateway.invoice_tax_cents(invoice)
        if ledger_vat != stripe_vat:
            rows.append(
                Difference(name, "", invoice["id"], f"VAT differs (ledger at {rate} %)", ledger_vat, stripe_vat)
            )
        mirror = mirrors.get(invoice["id"])
        if mirror is None:
            rows.append(
                Difference(name, "", invoice["id"], "invoice not mirrored here", None, invoice.get("amount_due"))
            )
        elif (mirror.status, mirror.amount_due_cents) != (invoice.get("status"), invoice.get("amount_due")):
            rows.append(
                Difference(
                    name,
                    "",
                    invoice["id"],
                    f"mirror says {mirror.status}; Stripe {invoice.get('status')}",
                    mirror.amount_due_cents,
                    invoice.get("amount_due"),
                )
            )
    return rows


def _item(source: dict, item_id: str | None) -> dict:
    return {
        "item": item_id,
        "amount": source["amount"],
        "currency": source["currency"].upper(),
        "month": (source.get("metadata") or {}).get(stripe_gateway.MONTH_METADATA),
    }
