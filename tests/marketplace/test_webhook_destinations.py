"""Webhooks cannot be turned against our own network (SSRF): internal destinations are refused
when an endpoint is registered and again at every delivery, before any connection; the
request goes to the address that was checked (a DNS rebind cannot move it), follows no
redirect, and ends at one total deadline. With real sockets on loopback addresses."""

import datetime as dt
import ipaddress
import socket
import time
from urllib.parse import urlsplit

import pytest
from django.utils import timezone

from marketplace import services
from marketplace.exceptions import ServiceError
from marketplace.models import Role, WebhookDelivery, WebhookEndpoint
from marketplace.services import webhook_destinations
from marketplace.services.webhook_destinations import address_refusal
from tests.errors import assert_error
from tests.webhook_receivers import PUBLIC_ADDRESS, TLS_HOST, FakeResolver, Listener, Receiver, Trickler, make_test_ca

HOOKS = "/api/v1/webhooks/"
EVENTS = ["report.succeeded"]
INTERNAL = ["127.0.0.1", "10.0.0.5", "169.254.169.254", "::1", "::ffff:127.0.0.1", "0.0.0.0"]


@pytest.fixture
def owner(tenant, client_for):
    return client_for(tenant, Role.OWNER)


@pytest.fixture
def resolver(monkeypatch) -> FakeResolver:
    fake = FakeResolver()
    monkeypatch.setattr(webhook_destinations, "resolve", fake)
    return fake


@pytest.fixture
def connections(monkeypatch) -> list:
    """Every (address, port) a socket of this process connects to (the database's libpq is not Python's)."""
    made = []
    real_connect = socket.socket.connect

    def connect(sock, address):
        made.append(tuple(address[:2]))
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return made


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory):
    return make_test_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def tls_receiver(test_ca, monkeypatch):
    """An HTTPS receiver on 127.0.0.1 with a certificate for hooks.buyer.test from a test CA that
    the sender trusts (SSL_CERT_FILE, as for a development CA)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(test_ca["ca"]))
    receiver = Receiver(tls=test_ca)
    yield receiver
    receiver.close()


def deliver(tenant, url: str) -> WebhookDelivery:
    """Register url (checked then), queue a delivery to it and run it once; the delivery after that."""
    endpoint = WebhookEndpoint.objects.create(tenant=tenant, url=url, events=EVENTS, secret="whsec_c2VjcmV0")
    delivery = WebhookDelivery.objects.create(
        endpoint=endpoint,
        event="report.succeeded",
        payload={"type": "report.succeeded"},
        next_attempt_at=timezone.now(),
    )
    services.webhook_deliver(delivery_id=str(delivery.pk))
    delivery.refresh_from_db()
    return delivery


def register(tenant, url: str) -> WebhookEndpoint:
    principal = services.Principal(tenant=tenant, role=Role.OWNER, api_key=None)
    return services.webhook_endpoint_create(principal=principal, url=url, events=EVENTS)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("100.64.0.1", "shared"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "this network"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("255.255.255.255", "reserved"),
        ("240.0.0.1", "reserved"),
        ("192.0.2.10", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fd00::1", "private"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "IPv4-mapped IPv6 address (the IPv4 address is a loopback"),
        ("::ffff:10.0.0.1", "IPv4-mapped IPv6 address (the IPv4 address is a private"),
        ("::ffff:8.8.8.8", "IPv4-mapped IPv6 address"),
        ("::127.0.0.1", "reserved"),
        ("64:ff9b::a9fe:a9fe", "carries a link-local"),
        ("2002:7f00:1::", "carries a loopback"),
        ("2001:db8::1", "documentation"),
        ("2001::1", "IETF"),
    ],
)
def test_internal_addresses_are_refused(address, reason):
    refusal = address_refusal(ipaddress.ip_address(address))
    assert refusal is not None and reason in refusal, refusal


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "2a00:1450:4001::200e"])
def test_public_addresses_are_allowed(address):
    assert address_refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1:5432/",
        "https://10.0.0.5/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]:5672/",
        "https://[::ffff:127.0.0.1]/hook",
        "https://[::ffff:a9fe:a9fe]/latest/meta-data/",
        "https://0.0.0.0:8000/",
        "https://localhost:8000/hook",  # a name that resolves to loopback
        "https://Web.LocalHost:8000/hook",
        "https://api.localhost/hook",
        "https://internal.buyer.test/hook",  # resolves to 10.0.0.5 (below)
        "https://mixed.buyer.test/hook",  # one public address and one private
    ],
)
def test_internal_destinations_are_refused_at_registration(owner, tenant, resolver, connections, url):
    resolver.answers["internal.buyer.test"] = ["10.0.0.5"]
    resolver.answers["mixed.buyer.test"] = [PUBLIC_ADDRESS, "192.168.0.7"]

    response = owner.post(HOOKS, {"url": url, "events": EVENTS}, format="json")

    error = assert_error(response, 400, "webhook_destination_refused", attr="url")
    assert "public" in error["message"]
    assert not WebhookEndpoint.objects.filter(tenant=tenant).exists()
    assert not [made for made in connections if made[1] == (urlsplit(url).port or 443)]


@pytest.mark.parametrize("url", ["https://LOCALHOST./", "https://127.1/", "https://2130706433/", "https://0x7f.1/"])
def test_other_spellings_of_loopback_are_refused(tenant, url):
    """Names the API's URL check would stop already, refused by the service too."""
    with pytest.raises(ServiceError) as refused:
        register(tenant, url)

    assert refused.value.code == "webhook_destination_refused"


def test_a_refusal_does_not_say_what_a_name_resolves_to(owner, resolver):
    resolver.answers["db.buyer.test"] = ["10.20.30.40"]

    error = owner.post(HOOKS, {"url": "https://db.buyer.test/", "events": EVENTS}, format="json").json()

    assert "10.20.30.40" not in error["message"] and "db.buyer.test" in error["message"]


def test_a_name_that_does_not_resolve_yet_is_accepted_and_checked_at_delivery(owner, tenant, resolver):
    response = owner.post(HOOKS, {"url": "https://soon.buyer.test/hook", "events": EVENTS}, format="json")
    assert response.status_code == 201, response.content

    resolver.answers["soon.buyer.test"] = ["10.0.0.5"]
    endpoint = WebhookEndpoint.objects.get(pk=response.json()["id"])
    delivery = WebhookDelivery.objects.create(
        endpoint=endpoint, event="report.succeeded", payload={}, next_attempt_at=timezone.now()
    )
    services.webhook_deliver(delivery_id=str(delivery.pk))

    delivery.refresh_from_db()
    assert delivery.last_response.startswith("Refused: soon.buyer.test resolves to an address that is not a public")
    assert "10.0.0.5" not in delivery.last_response


@pytest.mark.parametrize("internal", INTERNAL)
def test_a_dns_rebind_after_registration_is_refused_at_delivery(tenant, resolver, connections, internal):
    """The name was public when registered; at delivery it points inside. Nothing connects to it."""
    listener = Listener("::1" if internal == "::1" else "127.0.0.1")
    resolver.answers[TLS_HOST] = [[PUBLIC_ADDRESS], [internal]]
    try:
        endpoint = register(tenant, f"https://{TLS_HOST}:{listener.port}/hook")
        delivery = WebhookDelivery.objects.create(
            endpoint=endpoint, event="report.succeeded", payload={}, next_attempt_at=timezone.now()
        )
        services.webhook_deliver(delivery_id=str(delivery.pk))
    finally:
        listener.close()

    delivery.refresh_from_db()
    assert resolver.lookups[TLS_HOST] == 2  # registered, then delivered: looked up each time
    assert delivery.last_response.startswith("Refused:"), delivery.last_response
    assert (delivery.attempts, delivery.last_status_code, delivery.delivered_at) == (1, None, None)
    assert delivery.next_attempt_at is not None  # tried again later: the name may point outside again
    assert listener.accepted == 0
    assert not [made for made in connections if made[1] == listener.port or made[0] == PUBLIC_ADDRESS]


@pytest.mark.parametrize("internal", INTERNAL)
def test_an_internal_address_stored_before_the_checks_is_refused_at_delivery(tenant, settings, connections, internal):
    listener = Listener("::1" if internal == "::1" else "127.0.0.1")
    host = f"[{internal}]" if ":" in internal else internal
    try:
        delivery = deliver(tenant, f"https://{host}:{listener.port}/hook")
    finally:
        listener.close()

    assert delivery.last_response.startswith(f"Refused: {internal} is "), delivery.last_response
    assert listener.accepted == 0
    assert not [made for made in connections if made[1] == listener.port]


def test_localhost_is_refused_at_delivery(tenant, connections):
    listener = Listener()
    try:
        delivery = deliver(tenant, f"https://localhost:{listener.port}/hook")
    finally:
        listener.close()

    assert delivery.last_response.startswith("Refused: localhost names this machine")
    assert listener.accepted == 0
    assert not [made for made in connections if made[1] == listener.port]


def test_the_request_goes_to_the_checked_address_with_the_hosts_name_and_certificate(
    tenant, settings, resolver, tls_receiver
):
    """Pinned: one lookup, the connection to the address it gave, Host and SNI the URL's name, and
    the certificate checked for that name."""
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    resolver.answers[TLS_HOST] = [["127.0.0.1"], ["10.0.0.5"]]  # a second lookup would get an internal address
    endpoint = register(tenant, tls_receiver.url_for(TLS_HOST))
    resolver.lookups.clear()
    resolver.answers[TLS_HOST] = [["127.0.0.1"], ["10.0.0.5"]]

    delivery = WebhookDelivery.objects.create(
        endpoint=endpoint, event="report.succeeded", payload={"ok": 1}, next_attempt_at=timezone.now()
    )
    services.webhook_deliver(delivery_id=str(delivery.pk))

    delivery.refresh_from_db()
    assert (delivery.last_status_code, delivery.last_response, bool(delivery.delivered_at)) == (200, "thanks", True)
    assert resolver.lookups == {TLS_HOST: 1}
    [received] = tls_receiver.received
    assert received["headers"]["Host"] == f"{TLS_HOST}:{tls_receiver.port}"
    assert tls_receiver.server_names == [TLS_HOST]


def test_a_certificate_for_another_name_is_refused(tenant, settings, resolver, tls_receiver):
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    resolver.answers["other.buyer.test"] = ["127.0.0.1"]

    delivery = deliver(tenant, tls_receiver.url_for("other.buyer.test"))

    assert delivery.last_response.startswith("TLSError:") and "other.buyer.test" in delivery.last_response
    assert delivery.delivered_at is None and tls_receiver.received == []


def test_an_address_url_needs_a_certificate_for_the_address(tenant, settings, tls_receiver):
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]

    delivery = deliver(tenant, tls_receiver.url)  # https://127.0.0.1:<port>/hooks: the certificate names a host

    assert delivery.last_response.startswith("TLSError:") and tls_receiver.received == []


@pytest.mark.parametrize("target", ["http://127.0.0.1:{port}/internal", "https://169.254.169.254/latest/meta-data/"])
def test_redirects_are_not_followed(tenant, settings, connections, target):
    settings.WEBHOOK_ALLOW_HTTP = True
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    internal = Listener()
    redirecting = Receiver()
    redirecting.answers.append((302, {"Location": target.format(port=internal.port)}, b"moved"))
    try:
        delivery = deliver(tenant, redirecting.url)
    finally:
        redirecting.close()
        internal.close()

    assert (delivery.last_status_code, delivery.last_response, delivery.delivered_at) == (302, "moved", None)
    assert len(redirecting.received) == 1
    assert internal.accepted == 0
    assert not [made for made in connections if made[0] == "169.254.169.254" or made[1] == internal.port]


def test_the_allow_list_lets_named_hosts_and_networks_through(owner, settings, resolver):
    body = {"url": "https://localhost:8443/hook", "events": EVENTS}
    assert owner.post(HOOKS, body, format="json").status_code == 400

    settings.WEBHOOK_ALLOWED_HOSTS = ["localhost"]
    assert owner.post(HOOKS, body, format="json").status_code == 201
    assert owner.post(HOOKS, {**body, "url": "https://127.0.0.1/"}, format="json").status_code == 400

    settings.WEBHOOK_ALLOWED_HOSTS = ["10.0.0.0/8", "fd00::/8"]
    resolver.answers["receiver.compose.test"] = ["10.1.2.3"]
    for url in ("https://10.9.9.9/", "https://[fd00::5]/", "https://receiver.compose.test:9000/"):
        assert owner.post(HOOKS, {**body, "url": url}, format="json").status_code == 201, url
    assert owner.post(HOOKS, {**body, "url": "https://169.254.169.254/"}, format="json").status_code == 400


def test_plain_http_is_refused_at_delivery_once_the_development_setting_is_off(tenant, settings):
    settings.WEBHOOK_ALLOW_HTTP = True
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    receiver = Receiver()
    try:
        endpoint = register(tenant, receiver.url)
        settings.WEBHOOK_ALLOW_HTTP = False
        delivery = WebhookDelivery.objects.create(
            endpoint=endpoint, event="report.succeeded", payload={}, next_attempt_at=timezone.now()
        )
        services.webhook_deliver(delivery_id=str(delivery.pk))
    finally:
        receiver.close()

    delivery.refresh_from_db()
    assert delivery.last_response == "Refused: a webhook URL must use https://" and receiver.received == []


def test_the_deadline_is_for_the_whole_delivery_not_each_read(tenant, settings):
    """A byte a second of the status line would hold a per-read timeout for ever; the whole
    delivery ends at the deadline."""
    settings.WEBHOOK_ALLOW_HTTP = True
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.WEBHOOK_DEADLINE_SECONDS = 2
    trickler = Trickler(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n" + b"X-Slow: " + b"z" * 100 + b"\r\n\r\n")
    started = time.monotonic()
    try:
        delivery = deliver(tenant, trickler.url)
    finally:
        trickler.close()
    taken = time.monotonic() - started

    assert delivery.last_response.startswith("Timeout:"), delivery.last_response
    assert (delivery.last_status_code, delivery.delivered_at) == (None, None)
    assert 1 <= trickler.sent <= 4
    assert taken < settings.WEBHOOK_DEADLINE_SECONDS + 2


def test_an_answer_whose_body_trickles_counts_by_its_status(tenant, settings):
    settings.WEBHOOK_ALLOW_HTTP = True
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.WEBHOOK_DEADLINE_SECONDS = 2
    trickler = Trickler(b"b" * 500, interval=0.5, head=b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n")
    try:
        delivery = deliver(tenant, trickler.url)
    finally:
        trickler.close()

    assert (delivery.last_status_code, delivery.delivered_at is not None) == (200, True)
    assert 1 <= len(delivery.last_response) <= 6 and set(delivery.last_response) == {"b"}


def test_only_the_start_of_a_large_answer_is_kept(tenant, settings):
    settings.WEBHOOK_ALLOW_HTTP = True
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    receiver = Receiver()
    receiver.answers.append((500, {}, b"\x00" + b"x" * 5_000_000))
    try:
        delivery = deliver(tenant, receiver.url)
    finally:
        receiver.close()

    assert delivery.last_status_code == 500
    assert delivery.last_response == "\ufffd" + "x" * 999


def test_the_sweeper_ignores_what_is_not_due(tenant, settings):
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    endpoint = WebhookEndpoint.objects.create(
        tenant=tenant, url="https://127.0.0.1:9/", events=EVENTS, secret="whsec_c2VjcmV0"
    )
    later = timezone.now() + dt.timedelta(hours=1)
    WebhookDelivery.objects.create(endpoint=endpoint, event="e", payload={}, next_attempt_at=later)
    WebhookDelivery.objects.create(endpoint=endpoint, event="e", payload={}, delivered_at=timezone.now())
    WebhookDelivery.objects.create(endpoint=endpoint, event="e", payload={}, gave_up_at=timezone.now())

    assert services.webhook_deliveries_requeue() == 0
