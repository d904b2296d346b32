import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class Unit(models.TextChoices):
    CELL_DAY = "cell_day", "cells in the area × days in the period"
    ZONE_DAY = "zone_day", "zones × days in the period"


class Price(models.Model):
    """What a product costs per unit, in euros (fractions of a cent allowed; amounts are rounded to cents)."""

    product = models.OneToOneField("marketplace.Product", on_delete=models.PROTECT, related_name="price")
    unit = models.CharField(max_length=20, choices=Unit.choices)
    unit_price = models.DecimalField(max_digits=12, decimal_places=6)
    currency = models.CharField(max_length=3, default="EUR")

    def __str__(self) -> str:
        return f"{self.product}: {self.unit_price} {self.currency} per {self.unit}"


class UsageLine(models.Model):
    """The ledger: one usage line per succeeded report, written with its success; credits are
    negative lines. Append-only (the database refuses changes and deletions)."""

    class Kind(models.TextChoices):
        USAGE = "usage"
        CREDIT = "credit"

    tenant = models.ForeignKey("marketplace.Tenant", on_delete=models.PROTECT, related_name="usage_lines")
    report = models.ForeignKey("marketplace.Report", on_delete=models.PROTECT, related_name="usage_lines")
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
            models.CheckConstraint(
                condition=Q(kind="usage", amount_cents__gte=0) | Q(kind="credit", amount_cents__lt=0),
                name="usage_positive_credit_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount_cents / 100:.2f} {self.currency} for report {self.report_id}"


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
