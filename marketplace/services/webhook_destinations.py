"""Where a buyer's webhook may be sent, and the one HTTP request a delivery makes.

A webhook URL is the buyer's, so it must not reach our own network (SSRF): its host must
resolve to public internet addresses only. Loopback, private, shared (carrier-grade NAT),
link-local (cloud metadata at 169.254.169.254), multicast, unspecified, reserved and
documentation ranges are refused, for IPv4 and IPv6, and so are IPv6 addresses that carry
such an IPv4 address (IPv4-mapped ::ffff:a.b.c.d, 6to4 and NAT64). The host is checked when
the endpoint is registered and again at every delivery; the request then goes to the very
address that was checked (the URL's host still in the Host header, the TLS SNI and the
certificate check), so a DNS answer that changes between the check and the connection
(a rebind) cannot move it. Redirects are not followed. The whole request, from the DNS
lookup to the last byte kept of the answer, has one deadline.

WEBHOOK_ALLOWED_HOSTS (development and tests only) names hosts, addresses or networks that
may be private: a fake receiver on 127.0.0.1, a compose service."""

import base64
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
USER_AGENT = "Footfall-Webhooks/1.0"
# Ranges that Python's own classification (ipaddress' is_global and friends) might let
# through in some version, refused by name.
_REFUSED_NETWORKS = [
    (ipaddress.ip_network(network), reason)
    for network, reason in [
        ("0.0.0.0/8", "a 'this network' address"),
        ("100.64.0.0/10", "a shared (carrier-grade NAT) address"),
        ("192.0.0.0/24", "an IETF protocol assignment address"),
        ("192.0.2.0/24", "a documentation address"),
        ("198.18.0.0/15", "a benchmarking address"),
        ("198.51.100.0/24", "a documentation address"),
        ("203.0.113.0/24", "a documentation address"),
        ("240.0.0.0/4", "a reserved address"),  # and 255.255.255.255, the broadcast address
        ("64:ff9b:1::/48", "a local-use NAT64 address"),
        ("100::/64", "a discard-only address"),
        ("2001::/23", "an IETF protocol assignment address"),
        ("2001:db8::/32", "a documentation address"),
        ("fc00::/7", "a unique local (private) address"),
        ("fec0::/10", "a site-local address"),
    ]
]
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class DestinationRefused(Exception):
    """A webhook URL we will not send to; the message says why (without internal addresses)."""

    def __init__(self, message: str, *, code: str = "webhook_destination_refused"):
        super().__init__(message)
        self.message = message
        self.code = code


class DeliveryFailed(Exception):
    """No answer: the kind (ConnectionError, Timeout, TLSError, ProtocolError) and what happened."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")


@dataclass(frozen=True)
class Destination:
    scheme: str
    host: str  # ASCII (IDNA), without brackets: what goes in the Host header and the TLS SNI
    port: int
    target: str  # path and query
    authorization: str | None  # from user:password in the URL

    @property
    def literal(self) -> IPAddress | None:
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None


@dataclass(frozen=True)
class Answer:
    status: int
    body_start: bytes


def destination_parse(url: str) -> Destination:
    """The URL's parts, or DestinationRefused: https:// only (http:// with WEBHOOK_ALLOW_HTTP)."""
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError as exc:
        raise DestinationRefused(f"not a valid URL: {exc}", code="invalid_url") from None
    if parts.scheme not in ("https", "http"):
        raise DestinationRefused("a webhook URL must use https://", code="webhook_not_https")
    if parts.scheme == "http" and not settings.WEBHOOK_ALLOW_HTTP:
        raise DestinationRefused("a webhook URL must use https://", code="webhook_not_https")
    if not host:
        raise DestinationRefused("a webhook URL needs a host", code="invalid_url")
    try:
        host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        raise DestinationRefused(f"{host!r} is not a valid host name", code="invalid_url") from None
    authorization = None
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(credentials.encode()).decode()
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Destination(
        scheme=parts.scheme,
        host=host.split("%", 1)[0],
        port=port or (443 if parts.scheme == "https" else 80),
        target=target,
        authorization=authorization,
    )


def address_refusal(address: IPAddress) -> str | None:
    """Why a delivery may not go to this address ("a loopback address"), or None if it is public."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            inner = address_refusal(address.ipv4_mapped)
            return "an IPv4-mapped IPv6 address" + (f" (the IPv4 address is {inner})" if inner else "")
        embedded = address.sixtofour or (
            ipaddress.IPv4Address(int(address) & 0xFFFFFFFF) if address in _NAT64 else None
        )
        if embedded is not None and (inner := address_refusal(embedded)):
            return f"an IPv6 address that carries {inner}"
    for test, reason in [
        (address.is_unspecified, "the unspecified address"),
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
    ]:
        if test:
            return reason
    for network, reason in _REFUSED_NETWORKS:
        if address.version == network.version and address in network:
            return reason
    if address.is_private:
        return "a private address"
    if address.is_reserved:
        return "a reserved address"
    if not address.is_global:
        return "not a public internet address"
    return None


def _allowed_networks() -> tuple[set[str], list]:
    names, networks = set(), []
    for entry in settings.WEBHOOK_ALLOWED_HOSTS:
        entry = entry.strip().lower()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
        except ValueError:
            names.add(entry.rstrip("."))
    return names, networks


def _name_allowed(host: str) -> bool:
    names, _ = _allowed_networks()
    return host.lower().rstrip(".") in names


def _is_allowed(address: IPAddress, host: str) -> bool:
    """Whether WEBHOOK_ALLOWED_HOSTS lets this private address through (the host by name, or the address)."""
    if _name_allowed(host):
        return True
    _, networks = _allowed_networks()
    return any(address.version == network.version and address in network for network in networks)


def resolve(host: str, port: int, timeout: float) -> list[str]:
    """The host's addresses from the system resolver, within timeout (a stuck lookup is left behind)."""
    answer: dict = {}

    def lookup():
        try:
            answer["addresses"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError) as exc:
            answer["error"] = exc

    resolver = threading.Thread(target=lookup, name="webhook-resolve", daemon=True)
    resolver.start()
    resolver.join(max(timeout, 0.0))
    if resolver.is_alive():
        raise TimeoutError(f"no DNS answer within {timeout:.1f} s")
    if "error" in answer:
        raise answer["error"]
    return list(dict.fromkeys(info[4][0] for info in answer["addresses"]))


def destination_addresses(destination: Destination, *, timeout: float) -> list[IPAddress]:
    """The addresses to connect to, every one checked; DestinationRefused if any is not allowed.

    An OSError (or TimeoutError) when the name does not resolve."""
    literal = destination.literal
    if literal is not None:
        reason = address_refusal(literal)
        if reason and not _is_allowed(literal, destination.host):
            raise DestinationRefused(f"{destination.host} is {reason}; webhooks are sent to public addresses only")
        return [literal]
    name = destination.host.lower().rstrip(".")
    if (name == "localhost" or name.endswith(".localhost")) and not _name_allowed(name):
        raise DestinationRefused(f"{destination.host} names this machine; webhooks are sent to public addresses only")
    found = resolve(destination.host, destination.port, timeout)
    addresses = [ipaddress.ip_address(address.split("%", 1)[0]) for address in found]
    if not addresses:
        raise OSError(f"{destination.host} has no addresses")
    if any(address_refusal(address) and not _is_allowed(address, destination.host) for address in addresses):
        # Which address is not said: the name may be one of our own network's.
        raise DestinationRefused(
            f"{destination.host} resolves to an address that is not a public internet address"
            " (loopback, private, link-local, multicast and reserved addresses are refused)"
        )
    return addresses


def destination_check(url: str, *, timeout: float) -> None:
    """At registration: DestinationRefused for a URL we would never send to. A name that does
    not resolve (yet) is accepted: every delivery resolves and checks it again."""
    destination = destination_parse(url)
    try:
        destination_addresses(destination, timeout=timeout)
    except OSError:
        pass


class _Watchdog:
    """The delivery's total deadline: when it passes, the socket in use is shut down, which
    ends any read or write blocked on it (a peer that trickles a byte at a time)."""

    def __init__(self, seconds: float):
        self.ends = time.monotonic() + seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        left = self.ends - time.monotonic()
        if left <= 0 or self.expired:
            raise TimeoutError("deadline passed")
        return left

    def watch(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                self._shut(sock)
        return sock

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        try:  # the plain socket's shutdown, also for a TLS socket: it keeps its TLS state intact
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass

    def cancel(self) -> None:
        self._timer.cancel()


def _connect(address: IPAddress, port: int, watchdog: _Watchdog) -> socket.socket:
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    sock = watchdog.watch(socket.socket(family, socket.SOCK_STREAM))
    try:
        sock.settimeout(watchdog.remaining())
        sock.connect((str(address), port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        sock.close()
        raise
    return sock


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Speaks to self.host (its Host header) at the checked address, never a new lookup."""

    def __init__(self, destination: Destination, address: IPAddress, watchdog: _Watchdog):
        super().__init__(destination.host, destination.port, timeout=watchdog.remaining())
        self.address, self.watchdog = address, watchdog

    def connect(self):
        self.sock = _connect(self.address, self.port, self.watchdog)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """As above, over TLS: SNI and the certificate check are for the URL's host, not the address."""

    def __init__(self, destination: Destination, address: IPAddress, watchdog: _Watchdog):
        context = ssl.create_default_context()  # verifies the chain and the host name
        super().__init__(destination.host, destination.port, timeout=watchdog.remaining(), context=context)
        self.address, self.watchdog = address, watchdog

    def connect(self):
        sock = _connect(self.address, self.port, self.watchdog)
        try:
            sock.settimeout(self.watchdog.remaining())
            self.sock = self.watchdog.watch(self._context.wrap_socket(sock, server_hostname=self.host))
        except BaseException:
            sock.close()
            raise


def destination_post(url: str, *, body: bytes, headers: dict[str, str], deadline: float, keep: int) -> Answer:
    """POST body to url within deadline seconds in all; the status and at most keep bytes of the
    answer. DestinationRefused before any connection if the host is not allowed; DeliveryFailed
    when there is no answer (no connection, TLS, the deadline, a broken answer)."""
    destination = destination_parse(url)
    watchdog = _Watchdog(deadline)
    try:
        return _post(destination, body=body, headers=headers, keep=keep, watchdog=watchdog)
    except TimeoutError:  # the deadline passed between two steps
        raise DeliveryFailed("Timeout", f"no answer within the deadline ({deadline:g} s)") from None
    finally:
        watchdog.cancel()


def _post(destination: Destination, *, body: bytes, headers: dict, keep: int, watchdog: _Watchdog) -> Answer:
    try:
        addresses = destination_addresses(destination, timeout=watchdog.remaining())
    except TimeoutError:
        raise DeliveryFailed("Timeout", f"no DNS answer for {destination.host} within the deadline") from None
    except OSError as exc:
        raise DeliveryFailed("ConnectionError", f"{destination.host} does not resolve ({exc})") from None
    headers = {"User-Agent": USER_AGENT, "Connection": "close", **headers}
    if destination.authorization:
        headers["Authorization"] = destination.authorization
    pinned = _PinnedHTTPSConnection if destination.scheme == "https" else _PinnedHTTPConnection
    connection, last_error = None, None
    try:
        for address in addresses:  # in the resolver's order, each already checked
            candidate = pinned(destination, address, watchdog)
            try:
                candidate.connect()
            except OSError as exc:
                candidate.close()
                if watchdog.expired or isinstance(exc, TimeoutError):
                    raise DeliveryFailed("Timeout", "no connection within the deadline") from None
                if isinstance(exc, ssl.SSLError):
                    raise DeliveryFailed("TLSError", str(exc)) from None
                last_error = exc
                continue
            connection = candidate
            break
        if connection is None:
            raise DeliveryFailed("ConnectionError", f"could not connect to port {destination.port}: {last_error}")
        try:
            connection.request("POST", destination.target, body=body, headers=headers)
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            if watchdog.expired or isinstance(exc, TimeoutError):
                raise DeliveryFailed("Timeout", "no complete answer within the deadline") from None
            raise DeliveryFailed("ProtocolError", f"{type(exc).__name__}: {exc}") from None
        kept = b""
        try:  # the start of the answer, as much as comes within the deadline
            while len(kept) < keep:
                chunk = response.read1(keep - len(kept))
                if not chunk:
                    break
                kept += chunk
        except (OSError, http.client.HTTPException):
            pass
        return Answer(status=response.status, body_start=kept[:keep])
    finally:
        if connection is not None:
            connection.close()
