"""The usage ledger: one line per succeeded report, written with its success; credits by account managers."""

from decimal import Decimal

import pytest
from django.contrib.auth.models import Group, User
from django.db import IntegrityError, ProgrammingError, transaction

from billing.models import UsageLine
from billing.services import usage_record
from marketplace.models import Report
from marketplace.services import report_run
from marketplace.staff import ACCOUNT_MANAGERS
from tests.factories import BILLED_ORDER

ORDER = BILLED_ORDER


@pytest.fixture
def succeeded(api, city, django_capture_on_commit_callbacks) -> Report:
    with django_capture_on_commit_callbacks(execute=True):
        report_id = api.post("/api/v1/reports/", ORDER, format="json").json()["id"]
    return Report.objects.get(pk=report_id, status=Report.Status.SUCCEEDED)


def test_a_succeeded_report_is_billed_once_at_its_price(succeeded):
    [line] = UsageLine.objects.all()

    # 16 cells x 2 days at 0.002 EUR a cell-day.
    assert (line.kind, line.product, line.quantity, line.unit) == ("usage", "footfall", Decimal(32), "cell_day")
    assert (line.unit_price, line.amount_cents, line.currency) == (Decimal("0.002"), 6, "EUR")
    assert line.tenant_id == succeeded.tenant_id


def test_running_a_report_again_bills_nothing_more(succeeded):
    report_run(report_id=str(succeeded.pk))  # a retried task: the report is final already

    assert UsageLine.objects.count() == 1
    with pytest.raises(IntegrityError), transaction.atomic():
        usage_record(report=succeeded)


def test_failed_and_cancelled_reports_are_not_billed(api, city):
    queued = api.post("/api/v1/reports/", ORDER, format="json").json()["id"]  # on_commit not run: stays queued
    api.post(f"/api/v1/reports/{queued}/cancel/")

    assert not UsageLine.objects.exists()


def test_the_ledger_cannot_be_changed(succeeded):
    with pytest.raises(ProgrammingError, match="append-only"), transaction.atomic():
        UsageLine.objects.update(amount_cents=0)


@pytest.fixture
def account_manager(db, client):
    user = User.objects.create_user("carl", password="not-used", is_staff=True)
    user.groups.add(Group.objects.get(name=ACCOUNT_MANAGERS))
    client.force_login(user)
    return client


def test_an_account_manager_credits_a_report_with_a_reason(account_manager, succeeded):
    response = account_manager.post(
        "/admin/billing/usageline/add/", {"report": succeeded.pk, "credit_cents": 4, "reason": "late delivery"}
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    credit = UsageLine.objects.get(kind="credit")
    assert (credit.amount_cents, credit.reason, credit.created_by.username) == (-4, "late delivery", "carl")


def test_a_credit_cannot_exceed_what_is_billed(account_manager, succeeded):
    response = account_manager.post(
        "/admin/billing/usageline/add/", {"report": succeeded.pk, "credit_cents": 7, "reason": "too much"}
    )

    assert response.status_code == 200 and "cannot exceed" in response.content.decode()
    assert UsageLine.objects.filter(kind="credit").count() == 0
