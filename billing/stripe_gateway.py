"""Every call to Stripe goes through here. Each call that creates something carries an
idempotency key derived from our own ids, so that a retry after a lost answer cannot create
it twice; errors that mean "try again later" become StripeUnavailable."""

import json

import stripe
from django.conf import settings

# Names Stripe's invoice items carry, so that a line can be found again in Stripe.
USAGE_LINE_METADATA = "usage_line_id"


class StripeUnavailable(Exception):
    """Stripe could not be reached or failed; nothing is known to have changed: try again later."""


class BadSignature(Exception):
    """A webhook whose Stripe-Signature does not match its body and our secret."""


def _client() -> stripe.StripeClient:
    return stripe.StripeClient(
        settings.STRIPE_SECRET_KEY, base_addresses={"api": settings.STRIPE_API_BASE}, max_network_retries=0
    )


def _calling(call):
    try:
        return call()
    except (stripe.APIConnectionError, stripe.APIError, stripe.RateLimitError) as error:
        raise StripeUnavailable(str(error) or type(error).__name__) from error


def plan_ensure() -> str:
    """The monthly plan of every subscription (0 a month: reports come as invoice items)."""
    client = _client()
    try:
        return _calling(lambda: client.v1.plans.retrieve(settings.STRIPE_PLAN_ID)).id
    except stripe.InvalidRequestError as error:
        if error.http_status != 404:
            raise
    plan = _calling(
        lambda: client.v1.plans.create(
            params={
                "id": settings.STRIPE_PLAN_ID,
                "amount": 0,
                "currency": "eur",
                "interval": "month",
                "product": {"name": "Footfall reports"},
            },
            options={"idempotency_key": f"plan-{settings.STRIPE_PLAN_ID}"},
        )
    )
    return plan.id


def customer_create(*, tenant_id: int, name: str) -> tuple[str, str]:
    """A customer for the tenant with a subscription to the plan: (customer id, subscription id)."""
    client = _client()
    plan_id = plan_ensure()
    customer = _calling(
        lambda: client.v1.customers.create(
            params={"name": name, "metadata": {"tenant_id": str(tenant_id)}},
            options={"idempotency_key": f"tenant-{tenant_id}-customer"},
        )
    )
    subscription = _calling(
        lambda: client.v1.subscriptions.create(
            params={"customer": customer.id, "items": [{"plan": plan_id}]},
            options={"idempotency_key": f"tenant-{tenant_id}-subscription"},
        )
    )
    return customer.id, subscription.id


def invoice_item_find(*, customer_id: str, line_id: int) -> str | None:
    """The customer's not yet invoiced item for the usage line, if one was created before."""
    for item in _pending_items(customer_id):
        if item["metadata"].get(USAGE_LINE_METADATA) == str(line_id):
            return item["id"]
    return None


def has_pending_items(*, customer_id: str) -> bool:
    return bool(_pending_items(customer_id))


def _pending_items(customer_id: str) -> list[dict]:
    client = _client()
    items = _calling(lambda: client.v1.invoice_items.list(params={"customer": customer_id, "limit": 100}))
    everything = [item.to_dict() for item in _calling(lambda: list(items.auto_paging_iter()))]
    return [item for item in everything if item.get("invoice") is None]


def invoice_item_create(*, customer_id: str, line_id: int, amount_cents: int, currency: str, description: str) -> str:
    client = _client()
    item = _calling(
        lambda: client.v1.invoice_items.create(
            params={
                "customer": customer_id,
                "amount": amount_cents,
                "currency": currency.lower(),
                "description": description,
                "metadata": {USAGE_LINE_METADATA: str(line_id)},
            },
            options={"idempotency_key": f"usage-line-{line_id}"},
        )
    )
    return item.id


def invoice_close(*, customer_id: str, subscription_id: str, month: str) -> dict:
    """Invoice the customer's pending items now and try to collect: the invoice as Stripe has it."""
    client = _client()
    invoice = _calling(
        lambda: client.v1.invoices.create(
            params={"customer": customer_id, "subscription": subscription_id, "metadata": {"month": month}},
            options={"idempotency_key": f"invoice-{customer_id}-{month}"},
        )
    )
    try:
        invoice = _calling(lambda: client.v1.invoices.pay(invoice.id))
    except stripe.CardError:
        pass  # the invoice is open; Stripe tells us through invoice.payment_failed
    except stripe.InvalidRequestError as error:
        if error.http_status != 404:  # 404: the customer has no payment method yet; the invoice stays open
            raise
        invoice = _calling(lambda: client.v1.invoices.retrieve(invoice.id))
    return invoice.to_dict()


def usage_items_of(*, customer_id: str) -> list[dict]:
    """Every invoice item of the customer that names a usage line, invoiced or pending:
    {"item", "usage_line_id", "amount", "currency", "invoice"} (for reconciliation)."""
    client = _client()
    found = []
    invoices = _calling(lambda: client.v1.invoices.list(params={"customer": customer_id, "limit": 100}))
    for invoice in _calling(lambda: list(invoices.auto_paging_iter())):
        lines = _calling(lambda invoice=invoice: client.v1.invoices.line_items.list(invoice.id, params={"limit": 100}))
        for line in _calling(lambda lines=lines: [each.to_dict() for each in lines.auto_paging_iter()]):
            if line.get("invoice_item") and USAGE_LINE_METADATA in (line.get("metadata") or {}):
                found.append(_usage_item(line["invoice_item"], line, invoice.id))
    for item in _pending_items(customer_id):
        if USAGE_LINE_METADATA in (item.get("metadata") or {}):
            found.append(_usage_item(item["id"], item, None))
    return found


def _usage_item(item_id: str, source: dict, invoice_id: str | None) -> dict:
    return {
        "item": item_id,
        "usage_line_id": source["metadata"][USAGE_LINE_METADATA],
        "amount": source["amount"],
        "currency": source["currency"].upper(),
        "invoice": invoice_id,
    }


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
