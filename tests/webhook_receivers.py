"""Real sockets for the webhook tests: a buyer's receiver (HTTP or HTTPS with a test CA), a
listener that only counts the connections made to it, a peer that trickles its answer, and a
resolver whose answers the test sets."""

import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from marketplace.services import webhook_destinations

TLS_HOST = "hooks.buyer.test"  # the name on the test certificate
PUBLIC_ADDRESS = "93.184.215.14"  # a public address: nothing is ever sent to it in the tests


def make_test_ca(directory: Path) -> dict[str, Path]:
    """A CA and a server certificate for TLS_HOST it signed (openssl): {"ca", "cert", "key"}."""
    ca_key, ca, key, csr, cert = (directory / name for name in ("ca.key", "ca.pem", "leaf.key", "leaf.csr", "leaf.pem"))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run("req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=Footfall test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    run("req", *ec, "-keyout", key, "-out", csr, "-subj", f"/CN={TLS_HOST}")
    extensions = directory / "leaf.ext"
    extensions.write_text(
        f"subjectAltName=DNS:{TLS_HOST}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n"
    )
    run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert, "-days", "2",
        "-extfile", extensions)  # fmt: skip
    return {"ca": ca, "cert": cert, "key": key}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, handler):
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, 0), handler)


class Receiver:
    """A buyer's endpoint on a loopback address. It answers each POST with the next of
    `answers` (a status, or (status, headers, body)), then 200; keeps what it got, and the TLS
    server names (SNI) it was asked for. With `hold` set, it keeps each answer back until
    `release()`."""

    def __init__(self, host: str = "127.0.0.1", tls: dict | None = None, hold: bool = False):
        self.received: list[dict] = []
        self.answers: list = []
        self.server_names: list[str | None] = []
        self.arrived = threading.Event()
        self.released = threading.Event()
        if not hold:
            self.released.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.received.append({"path": self.path, "headers": dict(self.headers), "body": body})
                receiver.arrived.set()
                receiver.released.wait(60)
                answer = receiver.answers.pop(0) if receiver.answers else 200
                status, headers, content = answer if isinstance(answer, tuple) else (answer, {}, b"thanks")
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(content)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(content)
                except OSError:
                    pass  # the sender stopped listening (its deadline)

            def log_message(self, *args):
                pass

        self.server = _Server(host, Handler)
        self.port = self.server.server_address[1]
        scheme = "http"
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls["cert"], tls["key"])
            context.sni_callback = lambda sock, name, ctx: self.server_names.append(name)
            self.server.socket = context.wrap_socket(
                self.server.socket, server_side=True, do_handshake_on_connect=False
            )
            scheme = "https"
        bracketed = f"[{host}]" if ":" in host else host
        self.url = f"{scheme}://{bracketed}:{self.port}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url_for(self, host: str) -> str:
        return f"{self.url.split('://')[0]}://{host}:{self.port}/hooks"

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


class Listener:
    """A TCP port that only counts the connections made to it: it must stay at zero."""

    def __init__(self, host: str = "127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self._stop:
            try:
                peer, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            peer.close()

    def close(self):
        self._stop = True
        self.sock.close()


class Trickler:
    """Reads a request, then sends `head` at once and `answer` one byte every `interval` seconds."""

    def __init__(self, answer: bytes, interval: float = 1.0, head: bytes = b""):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        self.sent = 0
        self.head, self.answer, self.interval = head, answer, interval
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        try:
            peer, _ = self.sock.accept()
        except OSError:
            return
        with peer:
            request = b""
            while b"\r\n\r\n" not in request:
                request += peer.recv(65536)
            try:
                peer.sendall(self.head)
                for position in range(len(self.answer)):
                    peer.sendall(self.answer[position : position + 1])
                    self.sent += 1
                    time.sleep(self.interval)
            except OSError:
                pass  # the sender hung up: its deadline

    def close(self):
        self.sock.close()


class FakeResolver:
    """Stands in for the system resolver: names map to the addresses the test sets (a list,
    or a list of lists: one per lookup, the last repeated); other names do not resolve,
    except localhost, which the real resolver answers. Counts the lookups per name."""

    def __init__(self):
        self.answers: dict[str, list] = {}
        self.lookups: dict[str, int] = {}
        self._real = webhook_destinations.resolve

    def __call__(self, host: str, port: int, timeout: float) -> list[str]:
        self.lookups[host] = self.lookups.get(host, 0) + 1
        if host == "localhost":
            return self._real(host, port, timeout)
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answer = self.answers[host]
        if answer and isinstance(answer[0], list):
            return answer.pop(0) if len(answer) > 1 else answer[0]
        return answer
