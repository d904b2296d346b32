"""Usage reaches Stripe exactly once, invoices come back through signed webhooks, and a
failed payment past its grace period stops new orders. Stripe is localstripe, a stateful
fake over real HTTP, started by the tests (tests/stripe_fake.py); nothing reaches the internet."""

import datetime as dt
import io
import time
from decimal import Decimal
from unittest import mock
from zoneinfo import ZoneInfo

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.utils import timezone

from billing import months as billing_months
from billing import sync as billing_sync
from billing.closing import month_close
from billing.models import Invoice, Price, StripeAccount, StripeEvent, UsageLine, UsageSync
from billing.services import credit_issue
from billing.sync import usage_sync
from marketplace.models import Report, Role
from marketplace.staff import ACCOUNT_MANAGERS
from tests.billing import clock
from tests.errors import assert_error
from tests.factories import BILLED_ORDER
from tests.stripe_fake import deliver

ORDER = BILLED_ORDER
ORDER_CENTS = 6  # 16 cells x 2 days at 0.002 EUR


@pytest.fixture(autouse=True)
def loaded(city):
    """The synthetic block's data, which the orders read."""


def this_month() -> str:
    """The billing month of now (lines are dated now), whatever the machine's clock says about UTC."""
    return timezone.now().astimezone(ZoneInfo(django_settings.BILLING_TIME_ZONE)).strftime("%Y-%m")


def order_succeeded(api, capture, name="Block") -> Report:
    with capture(execute=True):
        response = api.post("/api/v1/reports/", {**ORDER, "name": name}, format="json")
    assert response.status_code == 201, response.content
    return Report.objects.get(pk=response.json()["id"], status=Report.Status.SUCCEEDED)


def items_of(stripe_client, customer_id: str) -> list:
    return list(stripe_client.v1.invoice_items.list(params={"customer": customer_id}).auto_paging_iter())


def card_on_file(stripe_client, customer_id: str, number: str = "4242424242424242") -> None:
    """The customer adds a card, as they would on Stripe's own pages."""
    card = stripe_client.v1.payment_methods.create(
        params={"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"}}
    )
    stripe_client.v1.payment_methods.attach(card.id, params={"customer": customer_id})
    stripe_client.v1.customers.update(customer_id, params={"invoice_settings": {"default_payment_method": card.id}})


def latest_event(stripe_client, event_type: str) -> dict:
    return next(event.to_dict() for event in stripe_client.v1.events.list().data if event.type == event_type)


def test_order_to_paid_invoice_end_to_end(api, tenant, client_for, fake_stripe, django_capture_on_commit_callbacks):
    report = order_succeeded(api, django_capture_on_commit_callbacks)

    line = UsageLine.objects.get(report=report)
    sync = UsageSync.objects.get(line=line)
    account = StripeAccount.objects.get(tenant=tenant)
    [item] = items_of(fake_stripe, account.customer_id)
    assert (sync.state, sync.stripe_invoice_item_id) == ("synced", item.id)
    assert (item.amount, item.currency, item.metadata["usage_line_id"]) == (ORDER_CENTS, "eur", str(line.pk))

    card_on_file(fake_stripe, account.customer_id)
    with clock.after(this_month()):
        invoice = month_close(tenant=tenant, month=this_month())
    # 6 cents net and 19 % VAT (1.14 cents, rounded to 1): 7 cents.
    assert (invoice.status, invoice.amount_due_cents, invoice.amount_paid_cents) == ("paid", 7, 7)
    assert (invoice.subtotal_cents, invoice.tax_cents, invoice.month) == (
        6,
        1,
        billing_months.parse_month(this_month()),
    )

    # Stripe's webhook of the payment, signed as Stripe signs it, marks the local invoice paid.
    Invoice.objects.filter(pk=invoice.pk).update(status="open", paid_at=None, stripe_updated=0)
    response = deliver(api, latest_event(fake_stripe, "invoice.payment_succeeded"))
    assert response.status_code == 200, response.content
    invoice.refresh_from_db()
    assert invoice.status == "paid" and invoice.paid_at is not None
    sync.refresh_from_db()
    assert sync.stripe_invoice_id == invoice.stripe_invoice_id
    listed = client_for(tenant, Role.FINANCE).get("/api/v1/invoices/").json()["results"]
    assert [(row["id"], row["status"], row["amount_due"]) for row in listed] == [
        (invoice.stripe_invoice_id, "paid", "0.07")
    ]
    export = io.StringIO()
    call_command("billing_export", "--month", this_month(), stdout=export)
    assert export.getvalue().splitlines()[1] == (
        f"{tenant.name},,,domestic,footfall,cell_day,EUR,1,32.00,0.06,0.00,0.06,19.00,0.01,0.07,"
        f"{invoice.stripe_invoice_id},-,paid,-,-,,0"  # localstripe gives invoices no number, page or PDF
    )
    assert reconcile(this_month()).strip().endswith("no differences")


def test_retries_send_a_line_once(api, tenant, fake_stripe, django_capture_on_commit_callbacks):
    report = order_succeeded(api, django_capture_on_commit_callbacks)
    line = UsageLine.objects.get(report=report)

    assert usage_sync(line_id=line.pk) == "done"
    # As if the answer had been lost on the way back: the line is pending again after a connection error.
    UsageSync.objects.filter(pk=line.pk).update(state="pending", last_error="StripeUnavailable: read timed out")
    assert usage_sync(line_id=line.pk) == "synced"

    assert len(items_of(fake_stripe, StripeAccount.objects.get().customer_id)) == 1


def test_a_crash_after_stripe_answered_is_synced_once_after_restart(
    api, tenant, fake_stripe, django_capture_on_commit_callbacks
):
    with mock.patch.object(billing_sync, "_synced", side_effect=SystemExit("the worker dies")):
        with pytest.raises(SystemExit):
            order_succeeded(api, django_capture_on_commit_callbacks)
    line = UsageLine.objects.get()
    sync = UsageSync.objects.get(pk=line.pk)
    assert sync.state == "sending" and sync.lease_until > timezone.now()  # Stripe has the item; we did not record it
    customer_id = StripeAccount.objects.get().customer_id
    assert len(items_of(fake_stripe, customer_id)) == 1
    assert billing_sync.usage_lines_due() == []  # not while its sender's lease runs
    UsageSync.objects.filter(pk=line.pk).update(lease_until=timezone.now())  # the lease runs out

    call_command("shell", "-c", "from billing.tasks import sync_due_usage; sync_due_usage()")  # the beat sweep

    [item] = items_of(fake_stripe, customer_id)
    sync = UsageSync.objects.get(pk=line.pk)
    assert (sync.state, sync.stripe_invoice_item_id) == ("synced", item.id)


def test_while_stripe_is_down_lines_wait_and_back_off(
    api, tenant, fake_stripe, settings, django_capture_on_commit_callbacks
):
    reachable = settings.STRIPE_API_BASE
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"  # nothing listens there
    report = order_succeeded(api, django_capture_on_commit_callbacks)
    sync = UsageSync.objects.get(line__report=report)
    assert (sync.state, sync.attempts) == ("pending", 1)
    assert sync.next_attempt_at > timezone.now() and "connect" in sync.last_error.lower()
    assert billing_sync.usage_lines_due() == []  # not before its next try

    assert usage_sync(line_id=sync.pk) == "retry"
    sync.refresh_from_db()
    assert sync.attempts == 2 and sync.next_attempt_at - timezone.now() > dt.timedelta(minutes=3)

    settings.STRIPE_API_BASE = reachable
    UsageSync.objects.filter(pk=sync.pk).update(next_attempt_at=timezone.now())
    assert billing_sync.usage_lines_due() == [sync.pk]
    assert usage_sync(line_id=sync.pk) == "synced"


def test_a_credit_reaches_stripe_as_a_negative_item(api, tenant, fake_stripe, django_capture_on_commit_callbacks):
    report = order_succeeded(api, django_capture_on_commit_callbacks)

    with django_capture_on_commit_callbacks(execute=True):
        credit_issue(report=report, amount_cents=2, reason="late delivery", by=None)

    amounts = sorted(item.amount for item in items_of(fake_stripe, StripeAccount.objects.get().customer_id))
    assert amounts == [-2, ORDER_CENTS]


def test_without_a_stripe_key_lines_wait_in_the_outbox(api, tenant, django_capture_on_commit_callbacks):
    report = order_succeeded(api, django_capture_on_commit_callbacks)

    assert UsageSync.objects.get(line__report=report).state == "pending"
    assert not StripeAccount.objects.exists()


# --- webhooks -----------------------------------------------------------------------------


@pytest.fixture
def invoiced(api, tenant, fake_stripe, django_capture_on_commit_callbacks) -> Invoice:
    """A month closed for a customer without a card: the invoice is open."""
    order_succeeded(api, django_capture_on_commit_callbacks)
    with clock.after(this_month()):
        invoice = month_close(tenant=tenant, month=this_month())
    assert invoice.status == "open"
    return invoice


def invoice_event(fake_stripe, invoice: Invoice, event_type: str, *, created: int, **changes) -> dict:
    subject = {**fake_stripe.v1.invoices.retrieve(invoice.stripe_invoice_id).to_dict(), **changes}
    return {"id": f"evt_{event_type}_{created}", "type": event_type, "created": created, "data": {"object": subject}}


def test_a_badly_signed_webhook_is_refused_and_stores_nothing(client, invoiced, fake_stripe):
    event = invoice_event(fake_stripe, invoiced, "invoice.paid", created=int(timezone.now().timestamp()), status="paid")

    wrong_secret = deliver(client, event, secret="whsec_someone_else")
    too_old = deliver(client, event, timestamp=int(timezone.now().timestamp()) - 3600)
    unsigned = client.post("/billing/stripe/webhook/", b"{}", content_type="application/json")

    for response in (wrong_secret, too_old, unsigned):
        assert_error(response, 400, "bad_signature")
    assert not StripeEvent.objects.exists()
    invoiced.refresh_from_db()
    assert invoiced.status == "open"


def test_an_event_delivered_twice_is_applied_once(client, invoiced, fake_stripe):
    now = int(timezone.now().timestamp())
    event = invoice_event(fake_stripe, invoiced, "invoice.payment_failed", created=now)

    first, again = deliver(client, event), deliver(client, event)

    assert (first.json()["new"], again.json()["new"]) == (True, False)
    assert StripeEvent.objects.get().processed_at is not None
    invoiced.refresh_from_db()
    assert invoiced.payment_failed_at is not None


def test_an_older_event_arriving_late_changes_nothing(client, invoiced, fake_stripe):
    now = int(timezone.now().timestamp())
    paid = invoice_event(fake_stripe, invoiced, "invoice.paid", created=now, status="paid", amount_paid=6)
    failed = invoice_event(fake_stripe, invoiced, "invoice.payment_failed", created=now - 60)

    deliver(client, paid)
    deliver(client, failed)

    invoiced.refresh_from_db()
    assert (invoiced.status, invoiced.payment_failed_at) == ("paid", None)


def test_a_payment_failed_past_the_grace_period_stops_new_orders_until_paid(
    api, client, invoiced, fake_stripe, settings
):
    now = int(timezone.now().timestamp())
    deliver(client, invoice_event(fake_stripe, invoiced, "invoice.payment_failed", created=now))
    assert api.post("/api/v1/quotes/", ORDER, format="json").json()["orderable"] is True  # within the grace

    Invoice.objects.filter(pk=invoiced.pk).update(
        payment_failed_at=timezone.now() - dt.timedelta(days=settings.BILLING_PAYMENT_GRACE_DAYS + 1)
    )
    refused = api.post("/api/v1/reports/", {**ORDER, "name": "more"}, format="json")
    assert_error(refused, 403, "payment_overdue")
    assert "0.07 EUR" in refused.json()["message"]
    quote = api.post("/api/v1/quotes/", ORDER, format="json").json()
    assert [check["code"] for check in quote["checks"] if not check["passed"]] == ["payment_overdue"]

    deliver(client, invoice_event(fake_stripe, invoiced, "invoice.paid", created=now + 1, status="paid"))
    assert api.post("/api/v1/reports/", {**ORDER, "name": "more"}, format="json").status_code == 201


# --- reconciliation -------------------------------------------------------------------------


def reconcile(month: str) -> str:
    out = io.StringIO()
    call_command("billing_reconcile", "--month", month, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_reconciliation_finds_no_difference_when_stripe_has_every_line(
    api, tenant, fake_stripe, django_capture_on_commit_callbacks
):
    order_succeeded(api, django_capture_on_commit_callbacks)
    order_succeeded(api, django_capture_on_commit_callbacks, name="second")
    with clock.after(this_month()):
        month_close(tenant=tenant, month=this_month())

    assert reconcile(this_month()).strip().endswith("no differences")


def test_reconciliation_lists_every_difference(api, tenant, fake_stripe, django_capture_on_commit_callbacks):
    order_succeeded(api, django_capture_on_commit_callbacks)
    month = this_month()
    customer_id = StripeAccount.objects.get().customer_id
    fake_stripe.v1.invoice_items.create(
        params={"customer": customer_id, "amount": 999, "currency": "eur", "metadata": {"usage_line_id": "999999"}}
    )
    with mock.patch.object(
        billing_sync.stripe_gateway,
        "invoice_item_create",
        side_effect=billing_sync.stripe_gateway.StripeUnavailable("down"),
    ):
        order_succeeded(api, django_capture_on_commit_callbacks, name="unsent")

    report = reconcile(month)

    assert "only in Stripe" in report and "999999" in report
    assert "not sent to Stripe" in report


def test_closing_the_month_sends_what_waits_then_invoices(
    api, tenant, fake_stripe, settings, django_capture_on_commit_callbacks
):
    reachable = settings.STRIPE_API_BASE
    order_succeeded(api, django_capture_on_commit_callbacks)
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"
    waiting = order_succeeded(api, django_capture_on_commit_callbacks, name="while Stripe was down")
    settings.STRIPE_API_BASE = reachable
    out = io.StringIO()

    with clock.after(this_month()):
        call_command("billing_close_month", "--month", this_month(), stdout=out)

    assert UsageSync.objects.get(line__report=waiting).state == "synced"
    invoice = Invoice.objects.get()
    assert (invoice.status, invoice.amount_due_cents) == ("open", 14)  # no card on file yet; 12 net, 2 VAT
    assert f"({invoice.stripe_invoice_id}), open, net 0.12 VAT 0.02 total 0.14 EUR" in out.getvalue()


def test_account_managers_see_sync_states_invoices_and_events_in_the_admin(client, invoiced, fake_stripe):
    manager = User.objects.create_user("carla", password="not-used", is_staff=True)
    manager.groups.add(Group.objects.get(name=ACCOUNT_MANAGERS))
    client.force_login(manager)
    deliver(client, invoice_event(fake_stripe, invoiced, "invoice.payment_failed", created=int(time.time())))

    lines = client.get("/admin/billing/usageline/").content.decode()
    invoices = client.get("/admin/billing/invoice/").content.decode()
    events = client.get("/admin/billing/stripeevent/").content.decode()

    assert f"on {invoiced.stripe_invoice_id}" in lines and "synced ii_" in lines
    assert invoiced.stripe_invoice_id in invoices and "open" in invoices
    assert "invoice.payment_failed" in events


def test_a_plans_monthly_minimum_tops_the_month_up_once(api, tenant, fake_stripe, django_capture_on_commit_callbacks):
    footfall = Price.objects.get(product__code="footfall", tenant=None).product
    Price.objects.create(
        product=footfall, tenant=tenant, unit="cell_day", unit_price=Decimal("0.002"), monthly_minimum_cents=100
    )
    order_succeeded(api, django_capture_on_commit_callbacks)  # 6 cents

    with django_capture_on_commit_callbacks(execute=True), clock.after(this_month()):
        call_command("billing_close_month", "--month", this_month(), stdout=io.StringIO())
        call_command("billing_close_month", "--month", this_month(), stdout=io.StringIO())  # again: no second top-up

    [minimum] = UsageLine.objects.filter(kind="minimum")
    assert (minimum.amount_cents, minimum.sync.state) == (94, "synced")
    assert list(Invoice.objects.values_list("amount_due_cents", flat=True)) == [119]  # with 19 % VAT
    export = io.StringIO()
    call_command("billing_export", "--month", this_month(), stdout=export)
    assert ",1.00,0.00,1.00," in export.getvalue()  # billed, credited, net


# --- robust sync, webhook order, long invoices ------------------------------------------------


def test_a_customer_deleted_in_stripe_stops_neither_other_lines_nor_the_close(
    api, tenant, client_for, fake_stripe, django_capture_on_commit_callbacks
):
    from tests.factories import granted_tenant

    order_succeeded(api, django_capture_on_commit_callbacks)
    fake_stripe.v1.customers.delete(StripeAccount.objects.get(tenant=tenant).customer_id)  # someone, in Stripe
    with mock.patch("billing.services._sync_enqueue"):  # the tasks are lost: the sweep sends the lines
        mine = order_succeeded(api, django_capture_on_commit_callbacks, name="after the deletion")
        other = granted_tenant()
        theirs = order_succeeded(client_for(other), django_capture_on_commit_callbacks, name="theirs")

    assert billing_sync.usage_sync_due() == 2  # the sweep tries both; the first failure stops nothing

    failed = UsageSync.objects.get(line__report=mine)
    assert (failed.state, failed.attempts) == ("pending", 1)
    assert "StripeRefused" in failed.last_error and "404" in failed.last_error
    assert failed.next_attempt_at > timezone.now()
    assert UsageSync.objects.get(line__report=theirs).state == "synced"
    out, err = io.StringIO(), io.StringIO()
    with clock.after(this_month()):
        call_command("billing_close_month", "--month", this_month(), stdout=out, stderr=err)
    assert f"{tenant.name}: NOT INVOICED" in out.getvalue()
    assert Invoice.objects.get().tenant == other and f"{other.name}: invoice" in out.getvalue()
    assert "1 tenant(s) not invoiced" in err.getvalue()


def test_no_transaction_is_held_while_stripe_is_asked(api, tenant, fake_stripe, django_capture_on_commit_callbacks):
    from django.db import connection

    outer = len(connection.savepoint_ids)  # the test's own transaction
    seen = {}
    real = billing_sync.stripe_gateway.invoice_item_create

    def watching(**kwargs):
        sync = UsageSync.objects.get(pk=kwargs["line_id"])
        seen.update(depth=len(connection.savepoint_ids), state=sync.state, lease=sync.lease_until)
        return real(**kwargs)

    with mock.patch.object(billing_sync.stripe_gateway, "invoice_item_create", side_effect=watching):
        order_succeeded(api, django_capture_on_commit_callbacks)

    assert seen["depth"] == outer  # no transaction of ours is open during the call
    assert seen["state"] == "sending" and seen["lease"] > timezone.now()


def test_an_invoices_state_only_moves_forward(client, invoiced, fake_stripe):
    now = int(timezone.now().timestamp())
    deliver(client, invoice_event(fake_stripe, invoiced, "invoice.finalized", created=now, status="open"))
    deliver(client, invoice_event(fake_stripe, invoiced, "invoice.updated", created=now, status="draft"))  # same time

    invoiced.refresh_from_db()
    assert invoiced.status == "open"
    deliver(client, invoice_event(fake_stripe, invoiced, "invoice.paid", created=now - 30, status="paid"))
    invoiced.refresh_from_db()
    assert invoiced.status == "paid"  # further along, though its event is older


def test_an_uncollectible_invoice_stops_new_orders_at_once(api, client, invoiced, fake_stripe):
    now = int(timezone.now().timestamp())
    deliver(
        client,
        invoice_event(fake_stripe, invoiced, "invoice.marked_uncollectible", created=now, status="uncollectible"),
    )

    refused = api.post("/api/v1/reports/", {**ORDER, "name": "more"}, format="json")
    assert_error(refused, 403, "payment_overdue")
    assert "uncollectible" in refused.json()["message"]
    deliver(client, invoice_event(fake_stripe, invoiced, "invoice.paid", created=now + 1, status="paid"))
    assert api.post("/api/v1/reports/", {**ORDER, "name": "more"}, format="json").status_code == 201


def test_an_open_invoice_past_its_due_date_and_the_grace_stops_new_orders(api, invoiced, settings):
    Invoice.objects.filter(pk=invoiced.pk).update(
        due_at=timezone.now() - dt.timedelta(days=settings.BILLING_PAYMENT_GRACE_DAYS + 1)
    )

    assert_error(api.post("/api/v1/reports/", {**ORDER, "name": "more"}, format="json"), 403, "payment_overdue")


def test_every_line_of_an_invoice_of_more_than_ten_is_mirrored_and_exported(
    api, tenant, fake_stripe, django_capture_on_commit_callbacks
):
    footfall = Price.objects.get(product__code="footfall", tenant=None).product
    Price.objects.create(product=footfall, tenant=tenant, unit="cell_day", unit_price=Decimal("1"))
    report = order_succeeded(api, django_capture_on_commit_callbacks)  # 32.00
    for cent in range(11):
        with django_capture_on_commit_callbacks(execute=True):
            credit_issue(report=report, amount_cents=1, reason=f"goodwill {cent}", by=None)

    with clock.after(this_month()):
        invoice = month_close(tenant=tenant, month=this_month())

    assert fake_stripe.v1.invoices.retrieve(invoice.stripe_invoice_id).lines.has_more  # more than it embeds
    assert invoice.subtotal_cents == 3200 - 11
    assert UsageSync.objects.filter(stripe_invoice_id=invoice.stripe_invoice_id).count() == 12
    export = io.StringIO()
    call_command("billing_export", "--month", this_month(), stdout=export)
    assert export.getvalue().splitlines()[1].endswith(",0")  # not_in_stripe
    assert reconcile(this_month()).strip().endswith("no differences")
