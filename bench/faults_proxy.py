"""A TCP proxy the fault runner puts between the service and PostgreSQL, RabbitMQ or Redis, to
play their outages without touching the real servers (which other work on this machine shares).

A proxy is `up` (forwards both ways, after an optional delay per chunk), `down` (every
connection closed, new ones refused: a restart or a crash) or `hung` (connections accepted,
nothing forwarded either way: a server that stopped answering). From `hung` back to `up`,
held traffic flows again, as after a network partition heals."""

import selectors
import socket
import threading
import time

UP, DOWN, HUNG = "up", "down", "hung"


class Proxy:
    def __init__(self, name: str, upstream: tuple[str, int]):
        self.name = name
        self.upstream = upstream
        self.state = UP
        self.delay = 0.0  # seconds each chunk waits before it is forwarded (a slow link)
        self.port = _free_port()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._stopped = False
        self._thread = threading.Thread(target=self._accept_loop, name=f"proxy-{name}", daemon=True)
        self._thread.start()

    def set(self, state: str) -> None:
        self.state = state
        if state == DOWN:
            with self._lock:
                doomed, self._sockets = self._sockets, set()
            for sock in doomed:
                _close(sock)

    def stop(self) -> None:
        self._stopped = True
        self.set(DOWN)
        self._thread.join(timeout=5)

    # --- internals --------------------------------------------------------------------

    def _listen(self) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        return listener

    def _accept_loop(self) -> None:
        # While down, the listening socket is closed too, so clients get "connection refused"
        # at once, as from a server that is not running.
        listener = None
        selector = selectors.DefaultSelector()
        while not self._stopped:
            if self.state == DOWN:
                if listener is not None:
                    selector.unregister(listener)
                    _close(listener)
                    listener = None
                time.sleep(0.05)
                continue
            if listener is None:
                listener = self._listen()
                selector.register(listener, selectors.EVENT_READ)
            if not selector.select(timeout=0.1):
                continue
            client, _ = listener.accept()
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()
        if listener is not None:
            _close(listener)

    def _serve(self, client: socket.socket) -> None:
        self._track(client)
        while self.state == HUNG:  # accepted, but the server never answers
            time.sleep(0.05)
        if self.state == DOWN or client not in self._sockets:
            _close(client)
            return
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            self._forget(client)
            return
        server.settimeout(None)
        self._track(server)
        threading.Thread(target=self._pump, args=(server, client), daemon=True).start()
        self._pump(client, server)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                chunk = source.recv(65536)
                if not chunk:
                    break
                while self.state == HUNG:
                    time.sleep(0.05)
                if self.state == DOWN:
                    break
                if self.delay:
                    time.sleep(self.delay)
                sink.sendall(chunk)
        except OSError:
            pass
        self._forget(source)
        self._forget(sink)

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _forget(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        _close(sock)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
