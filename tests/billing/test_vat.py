"""VAT: billing addresses and VAT IDs (their formats per EU country), each customer's
treatment (domestic VAT, EU reverse charge, export), stated on quotes, sent to Stripe."""

import pytest
from django.contrib.auth.models import Group, User

from billing import tax
from billing.models import BillingProfile, StripeAccount
from marketplace.staff import ACCOUNT_MANAGERS
from tests.factories import BILLED_ORDER


@pytest.mark.parametrize(
    ("country", "vat_id", "normalized"),
    [
        ("AT", "ATU12345678", "ATU12345678"),
        ("DE", "de 123.456.789", "DE123456789"),
        ("FR", "FR12345678901", "FR12345678901"),
        ("NL", "NL123456789B01", "NL123456789B01"),
        ("GR", "EL123456789", "EL123456789"),
        ("IE", "IE1234567WA", "IE1234567WA"),
    ],
)
def test_vat_ids_of_the_countrys_format_are_accepted(country, vat_id, normalized):
    assert tax.vat_id_check(country=country, vat_id=vat_id) == normalized


@pytest.mark.parametrize(
    ("country", "vat_id", "why"),
    [
        ("AT", "ATU1234567", "format"),
        ("DE", "AT12345678", "starts with DE"),
        ("NL", "NL123456789001", "format"),
        ("CH", "CHE123456789", "not in it"),
    ],
)
def test_other_vat_ids_are_refused(country, vat_id, why):
    with pytest.raises(ValueError, match=why):
        tax.vat_id_check(country=country, vat_id=vat_id)


@pytest.mark.parametrize(
    ("country", "vat_id", "treatment"),
    [
        ("DE", "DE123456789", "domestic"),
        ("AT", "ATU12345678", "reverse_charge"),
        ("AT", "", "domestic"),  # not a business for VAT: the seller's VAT
        ("CH", "", "export"),
        ("US", "", "export"),
    ],
)
def test_the_treatment_follows_country_and_vat_id(country, vat_id, treatment):
    assert tax.treatment_for(country=country, vat_id=vat_id) == treatment


def test_quotes_state_net_vat_and_gross(api, tenant, city):
    domestic = api.post("/api/v1/quotes/", BILLED_ORDER, format="json").json()
    tax.profile_set(tenant=tenant, country="AT", vat_id="ATU12345678")
    reverse = api.post("/api/v1/quotes/", BILLED_ORDER, format="json").json()

    assert [domestic[key] for key in ("vat_treatment", "vat_rate", "net", "vat", "gross")] == [
        "domestic",
        "19.00",
        "0.06",
        "0.01",
        "0.07",
    ]
    assert [reverse[key] for key in ("vat_treatment", "vat_rate", "net", "vat", "gross")] == [
        "reverse_charge",
        "0.00",
        "0.06",
        "0.00",
        "0.06",
    ]


def test_an_account_manager_sets_the_billing_profile_with_a_valid_vat_id(client, tenant):
    manager = User.objects.create_user("vera", password="not-used", is_staff=True)
    manager.groups.add(Group.objects.get(name=ACCOUNT_MANAGERS))
    client.force_login(manager)
    form = {"tenant": tenant.pk, "email": "finance@example.at", "country": "at", "city": "Wien", "line1": "Ring 1"}

    wrong = client.post("/admin/billing/billingprofile/add/", {**form, "vat_id": "ATU123"})
    right = client.post("/admin/billing/billingprofile/add/", {**form, "vat_id": "ATU 1234 5678"})

    assert wrong.status_code == 200 and "format" in wrong.content.decode()
    assert right.status_code == 302, right.content.decode()[:3000]
    profile = BillingProfile.objects.get(tenant=tenant)
    assert (profile.country, profile.vat_id, profile.treatment) == ("AT", "ATU12345678", "reverse_charge")


def test_the_stripe_customer_gets_the_address_email_and_vat_id(
    api, tenant, city, fake_stripe, django_capture_on_commit_callbacks
):
    tax.profile_set(
        tenant=tenant, country="AT", vat_id="ATU12345678", email="finance@example.at", line1="Ring 1", city="Wien"
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert api.post("/api/v1/reports/", BILLED_ORDER, format="json").status_code == 201

    customer_id = StripeAccount.objects.get(tenant=tenant).customer_id
    customer = fake_stripe.v1.customers.retrieve(customer_id)
    assert (customer.email, customer.address.country, customer.address.city) == ("finance@example.at", "AT", "Wien")
    assert [tax_id.value for tax_id in fake_stripe.v1.customers.tax_ids.list(customer_id).data] == ["ATU12345678"]
    [item] = fake_stripe.v1.invoice_items.list(params={"customer": customer_id}).data
    assert [(rate.percentage, rate.display_name) for rate in item.tax_rates] == [(0.0, "VAT 0% reverse charge")]
