import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class Unit(models.TextChoices):
    CELL_DAY = "cell_day", "cells in the area × days in the period"
    ZONE_DAY = "zone_day", "zones × days in the period"


class Price(models.Model):
    """What a product costs per unit, in euros (fractions of a cent allowed; amounts are rounded
    to cents): the list price, or a tenant's own plan. Volume tiers lower the unit price for
    the units beyond a quantity in a calendar month (graduated)."""

    product = models.ForeignKey("marketplace.Product", on_delete=models.PROTECT, related_name="prices")
    tenant = models.ForeignKey(
        "marketplace.Tenant",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="prices",
        help_text="empty: the list price, for every tenant without a plan of its own for the product",
    )
    unit = models.CharField(max_length=20, choices=Unit.choices)
    unit_price = models.DecimalField(max_digits=12, decimal_places=6, help_text="per unit, before the first tier")
    currency = models.CharField(max_length=3, default="EUR")
    monthly_minimum_cents = models.PositiveBigIntegerField(
        "monthly minimum (cents)",
        null=True,
        blank=True,
        help_text="a tenant's plan only: a month billed less for the product is topped up to this when it is closed",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["product", "tenant"], name="one_price_per_product_and_tenant"),
            models.UniqueConstraint(
                fields=["product"], condition=Q(tenant__isnull=True), name="one_list_price_per_product"
            ),
        ]

    def __str__(self) -> str:
        plan = f" for {self.tenant}" if self.tenant_id else ""
        return f"{self.product}{plan}: {self.unit_price} {self.currency} per {self.unit}"


class PriceTier(models.Model):
    """From this many units in a month on, each further unit costs this."""

    price = models.ForeignKey(Price, on_delete=models.CASCADE, related_name="tiers")
    from_quantity = models.DecimalField(max_digits=16, decimal_places=2, help_text="units this month")
    unit_price = models.DecimalField(max_digits=12, decimal_places=6)

    class Meta:
        ordering = ["from_quantity"]
        constraints = [
            models.UniqueConstraint(fields=["price", "from_quantity"], name="one_tier_per_quantity"),
            models.CheckConstraint(condition=Q(from_quantity__gt=0), name="tier_after_zero"),
        ]

    def __str__(self) -> str:
        return f"from {self.from_quantity}: {self.unit_price}"


class UsageLine(models.Model):
    """The ledger: one usage line per succeeded report, written with its success; credits are
    negative lines. Append-only (the database refuses changes and deletions)."""

    class Kind(models.TextChoices):
        USAGE = "usage"
        CREDIT = "credit"
        MINIMUM = "minimum", "top-up to the plan's monthly minimum"

    tenant = models.ForeignKey("marketplace.Tenant", on_delete=models.PROTECT, related_name="usage_lines")
    report = models.ForeignKey(
        "marketplace.Report", on_delete=models.PROTECT, null=True, blank=True, related_name="usage_lines"
    )
    month = models.DateField(null=True, blank=True, help_text="a minimum's month (its first day)")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    product = models.CharField(max_length=40)
    quantity = models.DecimalField(max_digits=16, decimal_places=2)
    unit = models.CharField(max_length=20, choices=Unit.choices)
    unit_price = models.DecimalField(max_digits=12, decimal_places=6)
    amount_cents = models.BigIntegerField(help_text="negative for a credit")
    currency = models.CharField(max_length=3)
    reason = models.TextField(blank=True, help_text="why a credit was given")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # A retried task cannot bill a report twice.
            models.UniqueConstraint(fields=["report"], condition=Q(kind="usage"), name="one_usage_line_per_report"),
            # Closing a month twice cannot top it up twice.
            models.UniqueConstraint(
                fields=["tenant", "product", "month"], condition=Q(kind="minimum"), name="one_minimum_per_month"
            ),
            models.CheckConstraint(
                condition=Q(kind__in=["usage", "minimum"], amount_cents__gte=0) | Q(kind="credit", amount_cents__lt=0),
                name="usage_positive_credit_negative",
            ),
            models.CheckConstraint(
                condition=Q(kind="minimum", month__isnull=False) | Q(~Q(kind="minimum"), report__isnull=False),
                name="line_of_a_report_or_a_month",
            ),
        ]

    def __str__(self) -> str:
        what = f"report {self.report_id}" if self.report_id else f"{self.product} in {self.month:%Y-%m}"
        return f"{self.kind} {self.amount_cents / 100:.2f} {self.currency} for {what}"


class Quote(models.Model):
    """A price fixed for an order: asked for over the API (valid until it expires), or made
    when an order comes without one. Its report, once ordered, is billed exactly this."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey("marketplace.Tenant", on_delete=models.PROTECT, related_name="quotes")
    product = models.CharField(max_length=40)
    # SHA-256 of the order's body (without "quote"): an order may use the quote only for the same order.
    request_fingerprint = models.CharField(max_length=64)
    quantity = models.DecimalField(max_digits=16, decimal_places=2)
    unit = models.CharField(max_length=20, choices=Unit.choices)
    unit_price = models.DecimalField(max_digits=12, decimal_places=6)
    amount_cents = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    report = models.OneToOneField(
        "marketplace.Report", on_delete=models.PROTECT, null=True, blank=True, related_name="quote"
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.CheckConstraint(condition=Q(amount_cents__gte=0), name="quote_not_negative")]

    def __str__(self) -> str:
        return f"{self.product}: {self.amount_cents / 100:.2f} {self.currency} ({self.quantity} {self.unit})"


class StripeAccount(models.Model):
    """A tenant's Stripe customer and its subscription."""

    tenant = models.OneToOneField("marketplace.Tenant", on_delete=models.PROTECT, related_name="stripe_account")
    customer_id = models.CharField(max_length=255, unique=True)
    subscription_id = models.CharField(max_length=255)
    subscription_status = models.CharField(max_length=30, default="active")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.tenant}: {self.customer_id}"


class UsageSync(models.Model):
    """The outbox: each usage line (and credit) to send to Stripe, written with the line, and
    how sending it went. A line is sent once: its invoice item carries the line's id."""

    class State(models.TextChoices):
        PENDING = "pending"
        SENDING = "sending", "sending (a worker holds its lease)"
        SYNCED = "synced"

    line = models.OneToOneField(UsageLine, on_delete=models.PROTECT, primary_key=True, related_name="sync")
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_error = models.TextField(blank=True)
    # While `sending`: until when the worker that took the line may be talking to Stripe; after
    # it, the line may have reached Stripe and another worker sends it again (same idempotency key).
    lease_until = models.DateTimeField(null=True, blank=True)
    stripe_invoice_item_id = models.CharField(max_length=255, blank=True)
    stripe_invoice_id = models.CharField(max_length=255, blank=True, help_text="the invoice that holds it")
    synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="usagesync_due")]

    def __str__(self) -> str:
        return f"line {self.line_id}: {self.state}"


class StripeEvent(models.Model):
    """A webhook event from Stripe, stored as received before it is processed; once each."""

    id = models.CharField(max_length=255, primary_key=True)
    type = models.CharField(max_length=100)
    payload = models.JSONField()
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.type} {self.id}"


class Invoice(models.Model):
    """A tenant's Stripe invoice, mirrored from the webhooks and the month's close."""

    stripe_invoice_id = models.CharField(max_length=255, unique=True)
    tenant = models.ForeignKey("marketplace.Tenant", on_delete=models.PROTECT, related_name="invoices")
    number = models.CharField(max_length=100, blank=True)
    status = models.CharField(max_length=20, help_text="draft, open, paid, void or uncollectible")
    currency = models.CharField(max_length=3)
    amount_due_cents = models.BigIntegerField()
    amount_paid_cents = models.BigIntegerField(default=0)
    hosted_invoice_url = models.URLField(max_length=500, blank=True)
    invoice_pdf = models.URLField(max_length=500, blank=True)
    month = models.DateField(null=True, blank=True, help_text="the billing month it closes (its first day)")
    subtotal_cents = models.BigIntegerField(default=0, help_text="net, before VAT")
    tax_cents = models.BigIntegerField(default=0, help_text="VAT")
    total_cents = models.BigIntegerField(default=0, help_text="gross")
    due_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()
    paid_at = models.DateTimeField(null=True, blank=True)
    payment_failed_at = models.DateTimeField(null=True, blank=True, help_text="the first failed payment, until paid")
    # Stripe's time of the newest event applied: an older event arriving late changes nothing.
    stripe_updated = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.stripe_invoice_id} ({self.status})"


class MonthClose(models.Model):
    """A billing month closed for a tenant: when, its invoice (none: nothing to invoice), or
    the error that stopped it (the close is run again)."""

    tenant = models.ForeignKey("marketplace.Tenant", on_delete=models.PROTECT, related_name="month_closes")
    month = models.DateField(help_text="its first day")
    closed_at = models.DateTimeField(null=True, blank=True, help_text="empty: not closed yet (see the error)")
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, null=True, blank=True, related_name="closes")
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-month"]
        constraints = [models.UniqueConstraint(fields=["tenant", "month"], name="one_close_per_tenant_and_month")]

    def __str__(self) -> str:
        return f"{self.tenant} {self.month:%Y-%m}: {'closed' if self.closed_at else 'open'}"


class BillingProfile(models.Model):
    """Who an invoice is addressed to and how VAT applies (billing/tax.py)."""

    class Treatment(models.TextChoices):
        DOMESTIC = "domestic", "domestic VAT"
        REVERSE_CHARGE = "reverse_charge", "EU reverse charge (0 %, the customer accounts for VAT)"
        EXPORT = "export", "export outside the EU (no VAT)"

    tenant = models.OneToOneField("marketplace.Tenant", on_delete=models.PROTECT, related_name="billing_profile")
    email = models.EmailField(blank=True, help_text="where Stripe sends invoices and receipts")
    legal_name = models.CharField(max_length=200, blank=True)
    line1 = models.CharField(max_length=200, blank=True)
    line2 = models.CharField(max_length=200, blank=True)
    postal_code = models.CharField(max_length=20, blank=True)
    city = models.CharField(max_length=100, blank=True)
    country = models.CharField(max_length=2, help_text="ISO 3166-1 alpha-2, e.g. DE")
    vat_id = models.CharField(
        max_length=20, blank=True, help_text="EU VAT ID with its country prefix, e.g. ATU12345678"
    )
    treatment = models.CharField(max_length=20, choices=Treatment.choices, editable=False)
    synced_to_stripe = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.tenant}: {self.country} {self.vat_id} ({self.treatment})"


class CreditNote(models.Model):
    """A Stripe credit note on a finalized invoice, for a credit line of the ledger: credited
    to the customer's balance (invoice not paid yet or `credit`) or refunded (`refund`)."""

    class Kind(models.TextChoices):
        CREDIT = "credit", "credited to the customer's balance"
        REFUND = "refund", "refunded to the payment method"

    line = models.OneToOneField(UsageLine, on_delete=models.PROTECT, related_name="credit_note")
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="credit_notes")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    amount_cents = models.BigIntegerField(help_text="positive: what is credited or refunded, net")
    stripe_credit_note_id = models.CharField(max_length=255, blank=True)
    number = models.CharField(max_length=100, blank=True)
    pdf = models.URLField(max_length=500, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.kind} {self.amount_cents / 100:.2f} on {self.invoice.stripe_invoice_id}"
