"""Quotes fix an order's price and say whether it would be accepted; spending limits refuse
orders that would bill more than an owner allows this month; finance reads the month's usage."""

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from billing.models import Price, PriceTier, Quote, UsageLine
from marketplace.models import Report, Role
from tests import grid
from tests.errors import assert_error
from tests.factories import BILLED_ORDER

ORDER = BILLED_ORDER
# 16 cells x 2 days at 0.002 EUR a cell-day = 0.064 EUR: 6 cents.
ORDER_CENTS = 6


def quote(api, body=ORDER):
    response = api.post("/api/v1/quotes/", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def order(api, body, capture):
    with capture(execute=True):
        return api.post("/api/v1/reports/", body, format="json")


def test_a_quote_prices_the_order_and_lists_its_checks_without_ordering(api, city):
    answer = quote(api)

    assert (answer["quantity"], answer["unit"], answer["unit_price"]) == ("32.00", "cell_day", "0.002000")
    assert (answer["amount"], answer["currency"], answer["orderable"]) == ("0.06", "EUR", True)
    assert {check["check"] for check in answer["checks"]} == {
        "payment",
        "entitlement",
        "privacy_minimums",
        "licensed_region",
        "reports_in_progress",
        "fair_use",
        "spending_limit",
    }
    assert all(check["passed"] and check["code"] is None for check in answer["checks"])
    assert not Report.objects.exists()


def test_a_quote_says_when_the_fair_use_quota_is_used_up(api, city, settings, django_capture_on_commit_callbacks):
    settings.PRIVACY_QUERY_BUDGET = 1
    assert order(api, ORDER, django_capture_on_commit_callbacks).status_code == 201

    answer = quote(api, {**ORDER, "name": "again"})

    assert answer["orderable"] is False
    assert [(check["check"], check["code"]) for check in answer["checks"] if not check["passed"]] == [
        ("fair_use", "query_budget_exhausted")
    ]


def test_a_quote_says_why_the_order_would_be_refused(api, city):
    too_small = {**ORDER, "geometry": grid.geojson(grid.square(0, 0, 1, 1))}

    answer = quote(api, too_small)

    refused = [check for check in answer["checks"] if not check["passed"]]
    assert answer["orderable"] is False
    assert [(check["check"], check["code"]) for check in refused] == [
        ("privacy_minimums", "area_too_small"),
        ("privacy_minimums", "area_too_few_cells"),
    ]


def test_a_badly_formed_order_gets_no_quote(api, city):
    response = api.post("/api/v1/quotes/", {**ORDER, "granularity": "fortnight"}, format="json")

    assert response.status_code == 400
    assert not Quote.objects.exists()


def test_an_order_with_its_quote_is_billed_the_quoted_price_after_the_price_rises(
    api, city, django_capture_on_commit_callbacks
):
    quoted = quote(api)
    Price.objects.filter(product__code="footfall").update(unit_price=Decimal("1"))

    ordered = order(api, {**ORDER, "quote": quoted["id"]}, django_capture_on_commit_callbacks)

    assert ordered.status_code == 201, ordered.content
    assert ordered.json()["price"] == {
        "quote": quoted["id"],
        "quantity": "32.00",
        "unit": "cell_day",
        "amount": "0.06",
        "currency": "EUR",
    }
    [line] = UsageLine.objects.all()
    assert (line.unit_price, line.amount_cents) == (Decimal("0.002"), ORDER_CENTS)


def test_an_order_without_a_quote_is_billed_the_price_when_ordered(api, city, django_capture_on_commit_callbacks):
    ordered = order(api, ORDER, django_capture_on_commit_callbacks)
    Price.objects.filter(product__code="footfall").update(unit_price=Decimal("1"))  # after the order: no effect

    assert ordered.json()["price"]["amount"] == "0.06"
    assert UsageLine.objects.get().amount_cents == ORDER_CENTS


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ("expired", 400, "quote_expired"),
        ("other body", 400, "quote_mismatch"),
        ("used", 409, "quote_used"),
        ("unknown", 400, "unknown_quote"),
    ],
)
def test_an_order_cannot_use_a_quote_that_does_not_fit(
    api, city, django_capture_on_commit_callbacks, change, status, code
):
    quoted = quote(api)
    body = {**ORDER, "quote": quoted["id"]}
    if change == "expired":
        Quote.objects.filter(pk=quoted["id"]).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    elif change == "other body":
        body["end"] = "2026-03-28T00:00:00+01:00"
    elif change == "used":
        assert order(api, body, django_capture_on_commit_callbacks).status_code == 201
    else:
        body["quote"] = "00000000-0000-0000-0000-000000000000"
    reports = Report.objects.count()

    response = order(api, body, django_capture_on_commit_callbacks)

    assert_error(response, status, code, attr=None if status == 409 else "quote")
    assert Report.objects.count() == reports


def test_a_quote_of_another_organisation_is_unknown(api, city, tenant, client_for):
    from tests.factories import granted_tenant

    theirs = quote(client_for(granted_tenant(), Role.ANALYST))

    response = api.post("/api/v1/reports/", {**ORDER, "quote": theirs["id"]}, format="json")

    assert_error(response, 400, "unknown_quote", attr="quote")


def test_an_order_over_the_monthly_spending_limit_is_refused_with_the_numbers(
    api, city, tenant, client_for, django_capture_on_commit_callbacks
):
    owner = client_for(tenant, Role.OWNER)
    limit = owner.patch("/api/v1/organisation/", {"monthly_spending_limit": "0.10"}, format="json")
    assert limit.status_code == 200 and limit.json()["monthly_spending_limit"] == "0.10"
    assert order(api, ORDER, django_capture_on_commit_callbacks).status_code == 201  # 0.06 of 0.10

    second = order(api, {**ORDER, "name": "again"}, django_capture_on_commit_callbacks)

    assert_error(second, 402, "spending_limit_exceeded")
    assert "costs 0.06 EUR" in second.json()["message"] and "billed 0.06" in second.json()["message"]
    assert Report.objects.count() == 1
    assert quote(api, ORDER)["orderable"] is False
    assert owner.get("/api/v1/organisation/").json()["spent_this_month"] == "0.06"


def test_queued_reports_count_against_the_limit(api, city, tenant, client_for):
    client_for(tenant, Role.OWNER).patch("/api/v1/organisation/", {"monthly_spending_limit": "0.10"}, format="json")
    assert api.post("/api/v1/reports/", ORDER, format="json").status_code == 201  # queued: its task does not run

    second = api.post("/api/v1/reports/", {**ORDER, "name": "again"}, format="json")

    assert_error(second, 402, "spending_limit_exceeded")
    assert "0.06 is in reports still running" in second.json()["message"]


def test_a_negative_spending_limit_is_refused(tenant, client_for):
    response = client_for(tenant, Role.OWNER).patch(
        "/api/v1/organisation/", {"monthly_spending_limit": "-1"}, format="json"
    )

    assert_error(response, 400, "min_value", attr="monthly_spending_limit")


def test_finance_reads_the_months_usage_per_product(
    api, city, tenant, client_for, settings, django_capture_on_commit_callbacks
):
    order(api, ORDER, django_capture_on_commit_callbacks)
    order(api, {**ORDER, "name": "again"}, django_capture_on_commit_callbacks)
    report = Report.objects.first()
    UsageLine.objects.create(
        tenant=tenant,
        report=report,
        kind="credit",
        product="footfall",
        quantity=0,
        unit="cell_day",
        unit_price=Decimal("0.002"),
        amount_cents=-2,
        currency="EUR",
        reason="late",
    )
    finance = client_for(tenant, Role.FINANCE)
    month = timezone.now().astimezone(ZoneInfo(settings.BILLING_TIME_ZONE)).strftime("%Y-%m")  # billing months

    usage = finance.get(f"/api/v1/usage/?period={month}").json()
    earlier = finance.get("/api/v1/usage/?period=2020-01").json()

    assert usage["products"] == [
        {
            "product": "footfall",
            "unit": "cell_day",
            "currency": "EUR",
            "reports": 2,
            "quantity": "64.00",
            "billed": "0.12",
            "credited": "0.02",
            "net": "0.10",
        }
    ]
    assert earlier["products"] == []
    assert_error(finance.get("/api/v1/usage/?period=March"), 400, "invalid_period", attr="period")


def test_volume_tiers_price_the_units_each_order_adds_to_the_month(api, city, django_capture_on_commit_callbacks):
    list_price = Price.objects.get(product__code="footfall", tenant=None)
    PriceTier.objects.create(price=list_price, from_quantity=40, unit_price=Decimal("0.001"))

    first = order(api, ORDER, django_capture_on_commit_callbacks).json()["price"]
    second = order(api, {**ORDER, "name": "again"}, django_capture_on_commit_callbacks).json()["price"]

    # 32 units at 0.002; then 8 more at 0.002 and 24 beyond 40 at 0.001: 0.016 + 0.024.
    assert (first["amount"], second["amount"]) == ("0.06", "0.04")
    assert list(UsageLine.objects.order_by("created_at").values_list("amount_cents", flat=True)) == [6, 4]


def test_queued_orders_count_towards_the_tiers(api, city):
    PriceTier.objects.create(
        price=Price.objects.get(product__code="footfall", tenant=None), from_quantity=32, unit_price=Decimal("0.001")
    )
    assert api.post("/api/v1/reports/", ORDER, format="json").json()["price"]["amount"] == "0.06"  # stays queued

    assert quote(api, {**ORDER, "name": "again"})["amount"] == "0.03"  # all 32 beyond the tier's 32


def test_a_tenants_own_plan_replaces_the_list_price(api, city, tenant, django_capture_on_commit_callbacks):
    footfall = Price.objects.get(product__code="footfall", tenant=None).product
    Price.objects.create(product=footfall, tenant=tenant, unit="cell_day", unit_price=Decimal("0.01"))

    assert quote(api)["amount"] == "0.32"
    assert order(api, ORDER, django_capture_on_commit_callbacks).json()["price"]["amount"] == "0.32"
