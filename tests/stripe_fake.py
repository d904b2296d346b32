"""A local, stateful fake Stripe (localstripe) over real HTTP, and Stripe-signed webhooks.
The fixtures are registered in tests/conftest.py."""

import hashlib
import hmac
import json
import socket
import subprocess
import sys
import time

import pytest
import requests
import stripe

WEBHOOK_SECRET = "whsec_footfall_tests"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def localstripe():
    """localstripe in a process of its own for the test session; its base address."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "localstripe", "--port", str(port), "--from-scratch"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(f"{base}/v1/customers", auth=("sk_test_footfall", ""), timeout=1)
            break
        except requests.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("localstripe did not start") from None
            time.sleep(0.2)
    yield base
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def fake_stripe(localstripe, settings):
    """An empty fake Stripe, and the settings that point the service at it."""
    requests.delete(f"{localstripe}/_config/data", timeout=5).raise_for_status()
    settings.STRIPE_SECRET_KEY = "sk_test_footfall"
    settings.STRIPE_API_BASE = localstripe
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_LOCALSTRIPE = True  # the parts of the API it lacks: billing/stripe_gateway.py
    return stripe.StripeClient("sk_test_footfall", base_addresses={"api": localstripe}, max_network_retries=0)


def signed(event: dict, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> tuple[bytes, str]:
    """The body and Stripe-Signature header Stripe would send for the event."""
    payload = json.dumps(event).encode()
    timestamp = int(time.time()) if timestamp is None else timestamp
    signature = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return payload, f"t={timestamp},v1={signature}"


def deliver(client, event: dict, **signing):
    payload, signature = signed(event, **signing)
    return client.post(
        "/billing/stripe/webhook/", payload, content_type="application/json", HTTP_STRIPE_SIGNATURE=signature
    )
