from django import forms
from django.contrib import admin
from django.http import HttpResponse

from billing import services, stripe_gateway, tax
from billing.exports import export_csv, export_xlsx
from billing.models import (
    BillingProfile,
    CreditNote,
    Invoice,
    MonthClose,
    Price,
    PriceTier,
    Quote,
    StripeAccount,
    StripeEvent,
    UsageLine,
    UsageSync,
)
from billing.selectors import export_rows
from billing.sync import profile_push
from insights.admin import ReadOnlyAdmin
from marketplace.exceptions import ServiceError


class PriceTierInline(admin.TabularInline):
    model = PriceTier
    extra = 0


@admin.register(Price)
class PriceAdmin(admin.ModelAdmin):
    """List prices (no tenant) and tenants' own plans, with their volume tiers."""

    list_display = ["product", "tenant", "unit", "unit_price", "currency", "tiers"]
    list_filter = ["product", "tenant"]
    inlines = [PriceTierInline]

    @admin.display(description="tiers")
    def tiers(self, price: Price) -> str:
        return "; ".join(f"from {tier.from_quantity}: {tier.unit_price}" for tier in price.tiers.all()) or "-"


@admin.register(Quote)
class QuoteAdmin(ReadOnlyAdmin):
    """Prices given for orders: asked for over the API, or fixed when an order came without one."""

    list_display = ["created_at", "tenant", "product", "quantity", "unit", "amount", "expires_at", "report"]
    list_filter = ["product", "tenant"]
    date_hierarchy = "created_at"

    @admin.display(description="amount")
    def amount(self, quote: Quote) -> str:
        return f"{quote.amount_cents / 100:,.2f} {quote.currency}"


@admin.register(Invoice)
class InvoiceAdmin(ReadOnlyAdmin):
    """Stripe's invoices, as its webhooks last told; a failed payment shows until paid."""

    list_display = [
        "created_at",
        "tenant",
        "stripe_invoice_id",
        "number",
        "month",
        "status",
        "amount_due",
        "paid_at",
        "payment_failed_at",
    ]
    list_filter = ["status", "tenant"]
    search_fields = ["stripe_invoice_id", "number", "tenant__name"]

    @admin.display(description="amount due")
    def amount_due(self, invoice: Invoice) -> str:
        return f"{invoice.amount_due_cents / 100:,.2f} {invoice.currency}"


@admin.register(StripeEvent)
class StripeEventAdmin(ReadOnlyAdmin):
    """Stripe's webhooks as received (applied once each)."""

    list_display = ["received_at", "type", "id", "processed_at"]
    list_filter = ["type"]
    search_fields = ["id"]


@admin.register(StripeAccount)
class StripeAccountAdmin(ReadOnlyAdmin):
    list_display = ["tenant", "customer_id", "subscription_id", "subscription_status", "created_at"]
    search_fields = ["tenant__name", "customer_id"]


class CreditForm(forms.ModelForm):
    credit_cents = forms.IntegerField(min_value=1, help_text="how much to credit, in cents")

    class Meta:
        model = UsageLine
        fields = ["report", "reason"]

    def clean(self):
        data = super().clean()
        if data.get("report") and data.get("credit_cents"):
            try:
                services.credit_check(report=data["report"], amount_cents=data["credit_cents"], reason=data["reason"])
            except ServiceError as exc:
                raise forms.ValidationError(exc.message) from None
        return data


@admin.register(UsageLine)
class UsageLineAdmin(admin.ModelAdmin):
    """The ledger, read-only; "Add" gives a credit on a report, with a reason."""

    list_display = ["created_at", "tenant", "kind", "product", "quantity", "unit", "amount", "report", "stripe"]
    list_filter = ["kind", "product", "tenant", "sync__state"]
    list_select_related = ["tenant", "sync"]
    search_fields = ["tenant__name", "report__id", "reason"]
    date_hierarchy = "created_at"
    raw_id_fields = ["report"]
    actions = ["download_csv", "download_xlsx"]

    @admin.action(description="Export the selected lines per tenant and product (CSV)")
    def download_csv(self, request, lines):
        return _attachment(export_csv(export_rows(lines)), "text/csv", "billing.csv")

    @admin.action(description="Export the selected lines per tenant and product (XLSX)")
    def download_xlsx(self, request, lines):
        content = export_xlsx(export_rows(lines), title="billing")
        return _attachment(content, "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "billing.xlsx")

    @admin.display(description="amount")
    def amount(self, line: UsageLine) -> str:
        return f"{line.amount_cents / 100:,.2f} {line.currency}"

    @admin.display(description="Stripe")
    def stripe(self, line: UsageLine) -> str:
        """The outbox's state: synced (with its invoice), or waiting (tries, next try, last error)."""
        sync = getattr(line, "sync", None)
        if sync is None:
            return "-"
        if sync.state == UsageSync.State.SYNCED:
            return f"synced {sync.stripe_invoice_item_id}" + (
                f" on {sync.stripe_invoice_id}" if sync.stripe_invoice_id else ""
            )
        if not sync.attempts:
            return "waiting"
        return f"waiting: {sync.attempts} tries, next {sync.next_attempt_at:%Y-%m-%d %H:%M}; {sync.last_error[:80]}"

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = CreditForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        return ["report", "credit_cents", "reason"] if obj is None else super().get_fields(request, obj)

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in UsageLine._meta.fields] if obj else []

    def save_model(self, request, obj, form, change):
        line = services.credit_issue(
            report=form.cleaned_data["report"],
            amount_cents=form.cleaned_data["credit_cents"],
            reason=form.cleaned_data["reason"],
            by=request.user,
        )
        for field in UsageLine._meta.concrete_fields:  # the admin logs and shows the line it saved
            setattr(obj, field.attname, getattr(line, field.attname))

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


def _attachment(content: bytes, content_type: str, filename: str) -> HttpResponse:
    response = HttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


class BillingProfileForm(forms.ModelForm):
    class Meta:
        model = BillingProfile
        fields = ["tenant", "email", "legal_name", "line1", "line2", "postal_code", "city", "country", "vat_id"]

    def clean(self):
        data = super().clean()
        country = (data.get("country") or "").upper()
        data["country"] = country
        if data.get("vat_id"):
            try:
                data["vat_id"] = tax.vat_id_check(country=country, vat_id=data["vat_id"])
            except ValueError as error:
                self.add_error("vat_id", str(error))
        return data


@admin.register(BillingProfile)
class BillingProfileAdmin(admin.ModelAdmin):
    """Who a tenant's invoices are addressed to, and its VAT treatment (from its country and VAT ID)."""

    form = BillingProfileForm
    list_display = ["tenant", "country", "vat_id", "treatment", "email", "synced_to_stripe"]
    search_fields = ["tenant__name", "vat_id", "email"]

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        profile = tax.profile_set(
            tenant=data["tenant"],
            country=data["country"],
            vat_id=data.get("vat_id") or "",
            email=data.get("email") or "",
            **{key: data.get(key) or "" for key in ("legal_name", "line1", "line2", "postal_code", "city")},
        )
        obj.pk, obj.treatment = profile.pk, profile.treatment
        try:
            profile_push(tenant=profile.tenant)
        except stripe_gateway.StripeFailed as error:
            self.message_user(request, f"saved; Stripe's customer is not updated yet: {error}", level="warning")


@admin.register(MonthClose)
class MonthCloseAdmin(ReadOnlyAdmin):
    list_display = ["month", "tenant", "closed_at", "invoice", "error"]
    list_filter = ["month"]


@admin.register(CreditNote)
class CreditNoteAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "invoice", "kind", "amount_cents", "number", "stripe_credit_note_id", "last_error"]
