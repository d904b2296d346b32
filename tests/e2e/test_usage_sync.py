"""A worker killed after Stripe made the invoice item but before it recorded that: after a
restart the usage is in Stripe exactly once. Real broker, real workers, localstripe."""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from billing.models import StripeAccount, UsageLine, UsageSync
from tests.e2e.conftest import WAIT_SECONDS, wait_for_status
from tests.factories import BILLED_ORDER

pytestmark = pytest.mark.e2e
ORDER = BILLED_ORDER
PASSED_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key", "Stripe-Version")


class HoldingProxy:
    """In front of localstripe: passes every call on, but holds back the answer to the first
    creation of an invoice item, which localstripe has made by then, until released."""

    def __init__(self, upstream: str):
        self.holding = threading.Event()
        self.released = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.pass_on()

            def do_POST(self):
                self.pass_on()

            def do_DELETE(self):
                self.pass_on()

            def pass_on(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {name: self.headers[name] for name in PASSED_HEADERS if self.headers.get(name)}
                answer = requests.request(self.command, upstream + self.path, headers=headers, data=body, timeout=30)
                if self.command == "POST" and self.path.startswith("/v1/invoiceitems") and not proxy.released.is_set():
                    proxy.holding.set()
                    proxy.released.wait(WAIT_SECONDS)
                try:
                    self.send_response(answer.status_code)
                    self.send_header("Content-Type", answer.headers.get("Content-Type", "application/json"))
                    self.send_header("Content-Length", str(len(answer.content)))
                    self.end_headers()
                    self.wfile.write(answer.content)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the worker that asked is dead

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.released.set()
        self.server.shutdown()


@pytest.fixture
def proxy(localstripe):
    holding = HoldingProxy(localstripe)
    yield holding
    holding.close()


def wait_until(condition, what: str):
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {WAIT_SECONDS} s")
        time.sleep(0.2)


def test_a_worker_killed_between_stripe_and_the_ledger_syncs_the_usage_once(api, city, workers, fake_stripe, proxy):
    workers.env.update(
        {
            "STRIPE_SECRET_KEY": "sk_test_footfall",
            "STRIPE_API_BASE": proxy.base,
            "STRIPE_WEBHOOK_SECRET": "whsec_x",
            "STRIPE_LOCALSTRIPE": "true",
            # The dead worker's lease on the line runs out this soon; then the redelivered task sends it.
            "BILLING_SYNC_LEASE_SECONDS": "5",
        }
    )
    first = workers.start()
    report_id = api.post("/api/v1/reports/", ORDER, format="json").json()["id"]
    assert wait_for_status(report_id, "succeeded", "failed").status == "succeeded"
    assert proxy.holding.wait(WAIT_SECONDS), "the worker never sent the usage line to Stripe"
    line = UsageLine.objects.get(report_id=report_id)
    customer_id = StripeAccount.objects.get().customer_id

    def items():
        listed = fake_stripe.v1.invoice_items.list(params={"customer": customer_id})
        return [item for item in listed.auto_paging_iter() if item.metadata["usage_line_id"] == str(line.pk)]

    assert len(items()) == 1  # Stripe made it ...
    assert UsageSync.objects.get(pk=line.pk).state == "sending"  # ... and the ledger does not know yet

    workers.kill(first)  # SIGKILL: the sync task is neither finished nor acknowledged
    proxy.released.set()
    workers.start()  # the broker hands the unacknowledged task to the new worker

    wait_until(lambda: UsageSync.objects.get(pk=line.pk).state == "synced", "the line synced after the restart")
    [item] = items()
    assert UsageSync.objects.get(pk=line.pk).stripe_invoice_item_id == item.id
