"""VAT: who pays which rate (billing/models.BillingProfile), VAT IDs' formats, and the
amounts. Stripe applies it through tax rates on each invoice item (docs/billing.md says why
not Stripe Tax); the ledger's lines are net."""

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings

from billing.models import BillingProfile

Treatment = BillingProfile.Treatment

# EU member states and the format of their VAT IDs (after the country prefix; Greece is EL).
VAT_ID_FORMATS = {
    "AT": r"U\d{8}",
    "BE": r"[01]\d{9}",
    "BG": r"\d{9,10}",
    "CY": r"\d{8}[A-Z]",
    "CZ": r"\d{8,10}",
    "DE": r"\d{9}",
    "DK": r"\d{8}",
    "EE": r"\d{9}",
    "EL": r"\d{9}",
    "ES": r"[A-Z0-9]\d{7}[A-Z0-9]",
    "FI": r"\d{8}",
    "FR": r"[A-HJ-NP-Z0-9]{2}\d{9}",
    "HR": r"\d{11}",
    "HU": r"\d{8}",
    "IE": r"\d{7}[A-W][A-I]?|\d[A-Z+*]\d{5}[A-W]",
    "IT": r"\d{11}",
    "LT": r"\d{9}|\d{12}",
    "LU": r"\d{8}",
    "LV": r"\d{11}",
    "MT": r"\d{8}",
    "NL": r"\d{9}B\d{2}",
    "PL": r"\d{10}",
    "PT": r"\d{9}",
    "RO": r"\d{2,10}",
    "SE": r"\d{12}",
    "SI": r"\d{8}",
    "SK": r"\d{10}",
}
EU_COUNTRIES = {"GR" if prefix == "EL" else prefix for prefix in VAT_ID_FORMATS}


def vat_prefix(country: str) -> str:
    return "EL" if country == "GR" else country


def vat_id_normalized(vat_id: str) -> str:
    return re.sub(r"[\s.\-]", "", vat_id).upper()


def vat_id_check(*, country: str, vat_id: str) -> str:
    """The VAT ID normalized (no spaces, dots or dashes; upper case) if its format is that of the
    country's; ValueError says what is wrong. (Its existence is for VIES, not checked here.)"""
    country = country.upper()
    value = vat_id_normalized(vat_id)
    if country not in EU_COUNTRIES:
        raise ValueError(f"a VAT ID is for customers in the EU; {country} is not in it")
    prefix = vat_prefix(country)
    if not value.startswith(prefix):
        raise ValueError(f"a VAT ID of {country} starts with {prefix}, got {value!r}")
    if not re.fullmatch(VAT_ID_FORMATS[prefix], value[len(prefix) :]):
        raise ValueError(f"{value!r} is not a VAT ID of {country}'s format")
    return value


def treatment_for(*, country: str, vat_id: str) -> str:
    """Domestic VAT in the seller's country (and for EU customers without a VAT ID: not a
    business for VAT); reverse charge for other EU businesses with a VAT ID; none outside the EU."""
    country = country.upper()
    if country == settings.BILLING_SELLER_COUNTRY:
        return Treatment.DOMESTIC
    if country in EU_COUNTRIES:
        return Treatment.REVERSE_CHARGE if vat_id else Treatment.DOMESTIC
    return Treatment.EXPORT


def rate_of(treatment: str) -> Decimal:
    """The VAT rate in percent, to two places."""
    rate = Decimal(settings.BILLING_VAT_RATE) if treatment == Treatment.DOMESTIC else Decimal(0)
    return rate.quantize(Decimal("0.01"))


def treatment_of(tenant) -> str:
    """The tenant's treatment; without a billing profile, domestic (the seller's VAT)."""
    profile = BillingProfile.objects.filter(tenant=tenant).first()
    return profile.treatment if profile else Treatment.DOMESTIC


def vat_cents(net_cents: int, rate: Decimal) -> int:
    """VAT of one line, rounded to the cent half away from zero (as Stripe's tax rates round each line)."""
    return int((Decimal(net_cents) * rate / 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


@dataclass(frozen=True)
class Taxed:
    treatment: str
    rate: Decimal
    net_cents: int
    vat_cents: int

    @property
    def gross_cents(self) -> int:
        return self.net_cents + self.vat_cents


def taxed(*, tenant, net_cents: int) -> Taxed:
    treatment = treatment_of(tenant)
    rate = rate_of(treatment)
    return Taxed(treatment, rate, net_cents, vat_cents(net_cents, rate))


TAX_RATE_NAMES = {
    Treatment.DOMESTIC: ("VAT", "Umsatzsteuer"),
    Treatment.REVERSE_CHARGE: ("VAT 0% reverse charge", "Reverse charge: the customer accounts for the VAT"),
    Treatment.EXPORT: ("VAT 0% export", "Not subject to VAT: service to a customer outside the EU"),
}


def stripe_tax_rate(treatment: str) -> str:
    """The Stripe tax rate of the treatment (made once)."""
    from billing import stripe_gateway

    display_name, description = TAX_RATE_NAMES[treatment]
    return stripe_gateway.tax_rate_ensure(
        percentage=str(rate_of(treatment)), display_name=display_name, description=description, treatment=treatment
    )


def profile_set(*, tenant, country: str, vat_id: str = "", email: str = "", **address) -> BillingProfile:
    """A tenant's billing address, e-mail and VAT ID, validated; its treatment follows."""
    country = country.upper()
    if not re.fullmatch(r"[A-Z]{2}", country):
        raise ValueError(f"country is an ISO 3166 code such as DE, got {country!r}")
    vat_id = vat_id_check(country=country, vat_id=vat_id) if vat_id else ""
    profile, _ = BillingProfile.objects.update_or_create(
        tenant=tenant,
        defaults={
            "country": country,
            "vat_id": vat_id,
            "email": email,
            "treatment": treatment_for(country=country, vat_id=vat_id),
            "synced_to_stripe": False,
            **address,
        },
    )
    return profile


def stripe_customer_fields(profile: BillingProfile | None) -> dict:
    """The customer's fields in Stripe: e-mail, name and address."""
    if profile is None:
        return {}
    address = {
        "line1": profile.line1,
        "line2": profile.line2,
        "postal_code": profile.postal_code,
        "city": profile.city,
        "country": profile.country,
    }
    fields = {"address": {key: value for key, value in address.items() if value}}
    if profile.email:
        fields["email"] = profile.email
    if profile.legal_name:
        fields["name"] = profile.legal_name
    return fields
