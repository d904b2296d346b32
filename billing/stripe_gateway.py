"""Every call to Stripe goes through here, at the API version the pinned `stripe` library
speaks (stripe.api_version). Each call that creates something carries an idempotency key
derived from our own ids and a digest of its parameters, so that a retry after a lost
answer cannot create it twice, and other parameters never reuse a key. Errors that mean "try
again later" become StripeUnavailable, Stripe's refusals (4xx) StripeRefused.

localstripe (the tests' fake Stripe, STRIPE_LOCALSTRIPE) lacks some of the current API:
Prices (it has the legacy Plans), `pending` on listing invoice items, an invoice's metadata
at its creation, and credit notes. Those differences live here and nowhere else; the real
API's side is tested with responses in its shapes (tests/billing/stripe_shapes/)."""

import hashlib
import json

import stripe
from django.conf import settings

# Names Stripe's invoice items carry, so that a line can be found again in Stripe.
USAGE_LINE_METADATA = "usage_line_id"
MONTH_METADATA = "billing_month"
TAX_METADATA = "footfall_tax"


class StripeFailed(Exception):
    """A call to Stripe did not do what was asked."""

    http_status: int | None = None


class StripeUnavailable(StripeFailed):
    """Stripe could not be reached or failed; nothing is known to have changed: try again later."""


class StripeRefused(StripeFailed):
    """Stripe refused the call (4xx: e.g. the customer was deleted in Stripe); retrying the same
    call will not help until someone fixes the cause, but it is retried, backing off."""

    def __init__(self, message: str, http_status: int | None = None):
        super().__init__(message)
        self.http_status = http_status


class CreditNotesUnsupported(StripeFailed):
    """localstripe has no credit notes."""


class BadSignature(Exception):
    """A webhook whose Stripe-Signature does not match its body and our secret."""


def _fake() -> bool:
    return bool(getattr(settings, "STRIPE_LOCALSTRIPE", False))


def _http_client() -> stripe.HTTPClient:
    """The HTTP client (tests replace it to answer with responses in the real API's shapes)."""
    return stripe.RequestsClient(timeout=settings.STRIPE_TIMEOUT_SECONDS)


def _client() -> stripe.StripeClient:
    return stripe.StripeClient(
        settings.STRIPE_SECRET_KEY,
        base_addresses={"api": settings.STRIPE_API_BASE},
        max_network_retries=0,
        http_client=_http_client(),
    )


def _calling(call):
    try:
        return call()
    except (stripe.APIConnectionError, stripe.APIError, stripe.RateLimitError) as error:
        raise StripeUnavailable(str(error) or type(error).__name__) from error
    except stripe.StripeError as error:
        status = getattr(error, "http_status", None)
        raise StripeRefused(f"Stripe refused ({status}): {error.user_message or error}", status) from error


def _key(prefix: str, params: dict) -> str:
    """An idempotency key of our ids and the call's parameters: the same call, the same key;
    other parameters (a second close with more lines), another key."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return f"{prefix}-{digest}"


def _not_found(error: StripeRefused) -> bool:
    return error.http_status == 404


# --- the subscription's price ------------------------------------------------------------


def price_ensure() -> tuple[str, str]:
    """The monthly price every subscription holds (0 a month: reports come as invoice items):
    ("price", id) on Stripe, ("plan", id) on localstripe, which has only legacy Plans."""
    client = _client()
    if _fake():
        try:
            return "plan", _calling(lambda: client.v1.plans.retrieve(settings.STRIPE_PLAN_ID)).id
        except StripeRefused as error:
            if not _not_found(error):
                raise
        params = {
            "id": settings.STRIPE_PLAN_ID,
            "amount": 0,
            "currency": "eur",
            "interval": "month",
            "product": {"name": "Footfall reports"},
        }
        plan = _calling(
            lambda: client.v1.plans.create(params=params, options={"idempotency_key": _key("plan", params)})
        )
        return "plan", plan.id
    found = _calling(
        lambda: client.v1.prices.list(params={"lookup_keys": [settings.STRIPE_PLAN_ID], "active": True, "limit": 1})
    )
    if found.data:
        return "price", found.data[0].id
    params = {
        "lookup_key": settings.STRIPE_PLAN_ID,
        "unit_amount": 0,
        "currency": "eur",
        "recurring": {"interval": "month"},
        "product_data": {"name": "Footfall reports"},
    }
    price = _calling(lambda: client.v1.prices.create(params=params, options={"idempotency_key": _key("price", params)}))
    return "price", price.id


def customer_create(*, tenant_id: int, name: str, profile: dict | None = None) -> tuple[str, str]:
    """A customer for the tenant with a subscription to the price: (customer id, subscription id)."""
    client = _client()
    kind, price_id = price_ensure()
    params = {"name": name, "metadata": {"tenant_id": str(tenant_id)}, **(profile or {})}
    customer = _calling(
        lambda: client.v1.customers.create(
            params=params, options={"idempotency_key": _key(f"tenant-{tenant_id}", params)}
        )
    )
    sub_params = {"customer": customer.id, "items": [{kind: price_id}]}
    subscription = _calling(
        lambda: client.v1.subscriptions.create(
            params=sub_params, options={"idempotency_key": _key(f"tenant-{tenant_id}-subscription", sub_params)}
        )
    )
    return customer.id, subscription.id


def customer_update(*, customer_id: str, profile: dict, vat_id: str = "") -> None:
    """The customer's e-mail, name and billing address as invoices show them, and its VAT ID."""
    client = _client()
    if profile:
        _calling(lambda: client.v1.customers.update(customer_id, params=profile))
    if vat_id:
        listed = _calling(lambda: client.v1.customers.tax_ids.list(customer_id))
        if vat_id not in [tax_id.value for tax_id in listed.data]:
            _calling(
                lambda: client.v1.customers.tax_ids.create(customer_id, params={"type": "eu_vat", "value": vat_id})
            )


def tax_rate_ensure(*, percentage: str, display_name: str, description: str, treatment: str) -> str:
    """A (non-inclusive) tax rate for a treatment at a percentage, made once: found again by
    its metadata among the account's few tax rates."""
    client = _client()
    tag = f"{treatment}:{percentage}"
    rates = _calling(lambda: client.v1.tax_rates.list(params={"limit": 100}))
    for rate in _calling(lambda: [each.to_dict() for each in rates.auto_paging_iter()]):
        if (rate.get("metadata") or {}).get(TAX_METADATA) == tag and rate.get("active"):
            return rate["id"]
    params = {
        "display_name": display_name,
        "description": description,
        "percentage": percentage,
        "inclusive": False,
        "metadata": {TAX_METADATA: tag},
    }
    rate = _calling(lambda: client.v1.tax_rates.create(params=params, options={"idempotency_key": _key("txr", params)}))
    return rate.id


# --- invoice items -------------------------------------------------------------------------


def invoice_item_create(
    *,
    customer_id: str,
    subscription_id: str,
    line_id: int,
    month: str,
    amount_cents: int,
    currency: str,
    description: str,
    tax_rate_id: str | None = None,
) -> str:
    """The line's invoice item, pending on the subscription the month's invoice is made for.
    A retry with the same parameters within 24 hours gets the same item back from Stripe."""
    client = _client()
    params = {
        "customer": customer_id,
        "subscription": subscription_id,
        "amount": amount_cents,
        "currency": currency.lower(),
        "description": description,
        "metadata": {USAGE_LINE_METADATA: str(line_id), MONTH_METADATA: month},
    }
    if tax_rate_id:
        params["tax_rates"] = [tax_rate_id]
    item = _calling(
        lambda: client.v1.invoice_items.create(
            params=params, options={"idempotency_key": _key(f"usage-line-{line_id}", params)}
        )
    )
    return item.id


def invoice_item_find(*, customer_id: str, line_id: int) -> str | None:
    """The customer's pending item for the line, if an earlier attempt made one. Only asked
    after an attempt whose outcome is unknown (its lease ran out), not for every line."""
    for item in pending_items(customer_id):
        if (item.get("metadata") or {}).get(USAGE_LINE_METADATA) == str(line_id):
            return item["id"]
    return None


def pending_items(customer_id: str) -> list[dict]:
    client = _client()
    params = {"customer": customer_id, "limit": 100}
    if not _fake():
        params["pending"] = True  # localstripe lists only pending items and refuses the parameter
    items = _calling(lambda: client.v1.invoice_items.list(params=params))
    everything = [item.to_dict() for item in _calling(lambda: list(items.auto_paging_iter()))]
    return [item for item in everything if not item.get("invoice")]


# --- invoices -------------------------------------------------------------------------------


def invoice_close(*, customer_id: str, subscription_id: str, month: str, line_ids: list[int]) -> dict:
    """Invoice the subscription's pending items (the month's lines) and try to collect: the
    invoice as Stripe has it, with all its lines. The key covers the lines invoiced, so a
    second close with other lines makes another invoice, and a retry of the same the same."""
    client = _client()
    params = {
        "customer": customer_id,
        "subscription": subscription_id,
        # Since API version 2022-08-01 an invoice includes pending items only when asked.
        "pending_invoice_items_behavior": "include",
        "metadata": {MONTH_METADATA: month},
    }
    invoice = _calling(
        lambda: client.v1.invoices.create(
            params=params,
            options={"idempotency_key": _key(f"invoice-{customer_id}-{month}", {**params, "lines": sorted(line_ids)})},
        )
    )
    if _fake() and (invoice.to_dict().get("metadata") or {}).get(MONTH_METADATA) != month:
        # localstripe drops an invoice's metadata at creation; it keeps it on an update.
        invoice = _calling(lambda: client.v1.invoices.update(invoice.id, params={"metadata": params["metadata"]}))
    try:
        invoice = _calling(lambda: client.v1.invoices.pay(invoice.id))
    except StripeRefused:
        # No payment method yet (localstripe: 404; Stripe: 400/402) or a declined card: the invoice is
        # open, payable on its hosted page; Stripe tells us of failures through invoice.payment_failed.
        invoice = _calling(lambda: client.v1.invoices.retrieve(invoice.id))
    return invoice_complete(invoice.to_dict())


def invoice_complete(invoice: dict) -> dict:
    """The invoice with every line: an invoice object embeds only its first page (10) of lines."""
    lines = invoice.get("lines") or {}
    if not lines.get("has_more"):
        return invoice
    return {**invoice, "lines": {"object": "list", "data": invoice_lines(invoice["id"]), "has_more": False}}


def invoice_lines(invoice_id: str) -> list[dict]:
    client = _client()
    page = _calling(lambda: client.v1.invoices.line_items.list(invoice_id, params={"limit": 100}))
    return _calling(lambda: [each.to_dict() for each in page.auto_paging_iter()])


def line_usage(line: dict) -> tuple[str | None, str | None]:
    """(usage line id, invoice item id) of an invoice line. The item's id is the line's
    `invoice_item` before API version 2025-03-31, `parent.invoice_item_details.invoice_item` since."""
    item = line.get("invoice_item")
    if not item:
        parent = line.get("parent") or {}
        item = (parent.get("invoice_item_details") or {}).get("invoice_item")
    return (line.get("metadata") or {}).get(USAGE_LINE_METADATA), item


def invoice_tax_cents(invoice: dict) -> int:
    """VAT of an invoice: `total_taxes` since 2025-03-31, `tax` before (localstripe)."""
    if invoice.get("total_taxes") is not None:
        return sum(tax.get("amount", 0) for tax in invoice["total_taxes"])
    return invoice.get("tax") or 0


def invoices_of(*, customer_id: str) -> list[dict]:
    """Every invoice of the customer, each with all its lines."""
    client = _client()
    listed = _calling(lambda: client.v1.invoices.list(params={"customer": customer_id, "limit": 100}))
    found = []
    for invoice in _calling(lambda: list(listed.auto_paging_iter())):
        invoice = invoice.to_dict()
        found.append({**invoice, "lines": {"data": invoice_lines(invoice["id"]), "has_more": False}})
    return found


def usage_items_of(*, customer_id: str) -> list[dict]:
    """Every invoice item of the customer that names a usage line, invoiced or pending:
    {"item", "usage_line_id", "amount", "currency", "invoice", "month"} (for reconciliation)."""
    found = []
    for invoice in invoices_of(customer_id=customer_id):
        for line in invoice["lines"]["data"]:
            line_id, item_id = line_usage(line)
            if line_id:
                found.append(_usage_item(item_id, line, invoice["id"]))
    for item in pending_items(customer_id):
        if USAGE_LINE_METADATA in (item.get("metadata") or {}):
            found.append(_usage_item(item["id"], item, None))
    return found


def _usage_item(item_id: str | None, source: dict, invoice_id: str | None) -> dict:
    return {
        "item": item_id,
        "usage_line_id": source["metadata"][USAGE_LINE_METADATA],
        "month": source["metadata"].get(MONTH_METADATA),
        "amount": source["amount"],
        "currency": source["currency"].upper(),
        "invoice": invoice_id,
    }


# --- credit notes ---------------------------------------------------------------------------


def credit_note_create(
    *, invoice_id: str, line_id: int, amount_cents: int, description: str, refund: bool, tax_rate_id: str | None
) -> dict:
    """A credit note on a finalized invoice for a credit line: a custom line of the net amount
    (VAT at the invoice's rate is added by Stripe); refunded, or credited to the customer's balance."""
    if _fake():
        raise CreditNotesUnsupported("localstripe has no credit notes")
    client = _client()
    line = {"type": "custom_line_item", "description": description[:500], "quantity": 1, "unit_amount": amount_cents}
    if tax_rate_id:
        line["tax_rates"] = [tax_rate_id]
    params = {"invoice": invoice_id, "lines": [line], "metadata": {USAGE_LINE_METADATA: str(line_id)}}
    if refund:  # a paid invoice: the gross amount goes back to the payment method
        preview = _calling(lambda: client.v1.credit_notes.preview(params=params))
        params["refund_amount"] = preview.total
    note = _calling(
        lambda: client.v1.credit_notes.create(
            params=params, options={"idempotency_key": _key(f"credit-note-{line_id}", params)}
        )
    )
    return note.to_dict()


def event_verified(*, payload: bytes, signature: str) -> dict:
    """The event of a webhook whose signature is Stripe's for our secret (and recent); else BadSignature."""
    try:
        stripe.WebhookSignature.verify_header(
            payload.decode("utf-8"), signature, settings.STRIPE_WEBHOOK_SECRET, stripe.Webhook.DEFAULT_TOLERANCE
        )
        event = json.loads(payload)
    except (stripe.SignatureVerificationError, UnicodeDecodeError, ValueError) as error:
        raise BadSignature(str(error)) from None
    if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not isinstance(event.get("type"), str):
        raise BadSignature("the body is not a Stripe event")
    return event
