"""What a script sees when things go wrong: each error code as a message and an exit code; the
key never taken on the command line; a lost answer retried without ordering twice."""

import http.client
import json
import re
import socket
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from footfall.errors import CODES, FIELD_CODES, Exit

from marketplace.models import Area, Report, Role
from tests import grid
from tests.client.conftest import DAY
from tests.factories import raw_api_key

pytestmark = pytest.mark.e2e


def order_args(area_file) -> list:
    return ["order", "--file", area_file, "--start", DAY["start"], "--end", DAY["end"]]


def test_each_kind_of_error_has_its_exit_code_and_says_what_to_do(footfall, city, tenant, tmp_path, square_geojson):
    tiny = tmp_path / "tiny.geojson"
    tiny.write_text(json.dumps(grid.geojson(grid.square(0, 0, 0.5, 0.5))))
    refused = footfall("areas", "add", "Kiosk", tiny)
    assert refused.returncode == Exit.REFUSED, refused.stderr
    assert "error (area_too_small): geometry: area must be at least 0.25 km²" in refused.stderr
    assert "draw a larger area" in refused.stderr

    off_boundary = footfall("quote", "--file", square_geojson, "--start", "2026-03-27T10:00:00", "--end", DAY["end"])
    assert off_boundary.returncode == Exit.REFUSED and "not_on_bucket_boundary" in off_boundary.stderr

    unknown_key = footfall("reports", env={"FOOTFALL_KEY": "ff_abcd1234_" + "x" * 32})
    assert unknown_key.returncode == Exit.AUTH and "authentication_failed" in unknown_key.stderr

    no_key = footfall("reports", env={"FOOTFALL_KEY": None})
    assert no_key.returncode == Exit.AUTH and "no API key" in no_key.stderr and "FOOTFALL_KEY" in no_key.stderr

    missing = footfall("show", str(uuid.uuid4()))
    assert missing.returncode == Exit.FORBIDDEN and "not_found" in missing.stderr

    viewer = footfall(*order_args(square_geojson), env={"FOOTFALL_KEY": raw_api_key(tenant, Role.VIEWER)})
    assert viewer.returncode == Exit.FORBIDDEN and "permission_denied" in viewer.stderr

    tenant.monthly_spending_limit_cents = 0
    tenant.save(update_fields=["monthly_spending_limit_cents"])
    over_limit = footfall(*order_args(square_geojson))
    assert over_limit.returncode == Exit.LIMIT and "spending_limit_exceeded" in over_limit.stderr
    assert "an owner may raise it" in over_limit.stderr
    quote_over_limit = footfall("quote", "--file", square_geojson, "--start", DAY["start"], "--end", DAY["end"])
    assert quote_over_limit.returncode == Exit.LIMIT and "spending_limit_exceeded" in quote_over_limit.stderr
    assert Report.objects.count() == 0

    (footfall.home / "config.toml").write_text("retries = 1\n")
    unreachable = footfall(
        "reports",
        env={"FOOTFALL_URL": f"http://127.0.0.1:{free_port()}", "FOOTFALL_CONFIG": str(footfall.home / "config.toml")},
    )
    assert unreachable.returncode == Exit.UNAVAILABLE and "is the API running" in unreachable.stderr

    usage = footfall("order", "--file", square_geojson, "--start", "next tuesday", "--end", DAY["end"])
    assert usage.returncode == Exit.USAGE and "--start" in usage.stderr
    not_a_map = footfall("areas", "add", "Notes", tmp_path / "notes.txt")
    assert not_a_map.returncode == Exit.USAGE


def test_a_cancelled_report_exits_7(footfall, city, square_geojson):
    """No worker here: the order stays queued until it is cancelled."""
    ordered = json.loads(footfall("--json", *order_args(square_geojson)).stdout)
    assert footfall("cancel", ordered["id"]).returncode == 0

    waited = footfall("wait", ordered["id"], "-o", "never.csv")

    assert waited.returncode == Exit.REPORT_FAILED and f"report {ordered['id']} cancelled" in waited.stderr
    assert not (footfall.home / "never.csv").exists()
    gone = footfall("get", ordered["id"], "-o", "result.csv")
    assert gone.returncode == Exit.REFUSED and "report_not_succeeded" in gone.stderr


def test_a_wait_that_times_out_exits_9(footfall, city, square_geojson):
    ordered = json.loads(footfall("--json", *order_args(square_geojson)).stdout)
    waited = footfall("wait", ordered["id"], "--timeout", "1")
    assert waited.returncode == Exit.TIMEOUT and f"footfall wait {ordered['id']}" in waited.stderr


def test_a_script_run_again_with_its_idempotency_key_orders_once(footfall, city, tenant, square_geojson):
    first = json.loads(
        footfall("--json", *order_args(square_geojson), "--idempotency-key", "nightly-2026-03-27").stdout
    )
    again = json.loads(
        footfall("--json", *order_args(square_geojson), "--idempotency-key", "nightly-2026-03-27").stdout
    )
    assert again["id"] == first["id"] and Report.objects.filter(tenant=tenant).count() == 1

    other = footfall(*order_args(square_geojson), "-g", "hour", "--idempotency-key", "nightly-2026-03-27")
    assert other.returncode == Exit.REFUSED and "idempotency_key_reused" in other.stderr
    assert "give a new --idempotency-key" in other.stderr


def test_the_key_is_never_taken_on_the_command_line(footfall, city, tenant):
    key = footfall.env["FOOTFALL_KEY"]

    before = len(footfall.argv)
    for argv in (["--key", key, "reports"], ["reports", f"--api-key={key}"], ["show", key]):
        refused = footfall(*argv, env={"FOOTFALL_KEY": None})
        assert refused.returncode == Exit.USAGE
        assert "never taken on the command line" in refused.stderr and key not in refused.stderr + refused.stdout
    assert "--key" not in footfall("--help").stdout and "FOOTFALL_KEY" in footfall("--help").stdout

    # From a config file instead (and told when others may read that file).
    config = footfall.home / ".config" / "footfall" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'key = "{key}"\n')
    config.chmod(0o644)
    from_file = footfall("--json", "reports", env={"FOOTFALL_KEY": None})
    assert from_file.returncode == 0 and json.loads(from_file.stdout) == []
    assert "chmod 600" in from_file.stderr
    config.chmod(0o600)
    assert "chmod" not in footfall("reports", env={"FOOTFALL_KEY": None}).stderr

    # Every other run had the key in its environment only, never in its arguments.
    others = footfall.argv[:before] + footfall.argv[before + 3 :]
    assert others and not any(key in " ".join(map(str, argv)) for argv in others)


class LosingProxy(ThreadingHTTPServer):
    """Forwards every request to the live server, one per connection. The answer to the first
    request to `lose` (a method and a path's end) is thrown away after the server has acted on
    it: the connection closes as if the network broke on the way back."""

    daemon_threads = True

    def __init__(self, upstream: str, lose: tuple[str, str]):
        super().__init__(("127.0.0.1", 0), ProxyHandler)
        self.upstream = urlsplit(upstream)
        self.lose = lose
        self.seen: list[tuple[str | None, int]] = []  # (Idempotency-Key, status) of each request to `lose`
        self.lost = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def forward(self):
        server: LosingProxy = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        upstream = http.client.HTTPConnection(server.upstream.hostname, server.upstream.port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection", "keep-alive")}
        upstream.request(self.command, self.path, body=body or None, headers=headers)
        answer = upstream.getresponse()
        data = answer.read()
        upstream.close()
        method, path_end = server.lose
        if self.command == method and self.path.rstrip("/").endswith(path_end):
            server.seen.append((self.headers.get("Idempotency-Key"), answer.status))
            if server.lost == 0:
                server.lost += 1
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)  # the server acted; its answer is lost
                return
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True

    do_GET = do_POST = do_DELETE = do_PATCH = forward


@pytest.fixture
def losing_proxy(live_server):
    proxies = []

    def start(lose: tuple[str, str]) -> LosingProxy:
        proxy = LosingProxy(live_server.url, lose)
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        proxy.shutdown()
        proxy.server_close()


def test_an_order_whose_answer_is_lost_is_retried_and_placed_once(
    footfall, city, tenant, workers, losing_proxy, square_geojson, tmp_path
):
    proxy = losing_proxy(("POST", "/reports"))
    result_file = tmp_path / "result.csv"

    run = footfall(*order_args(square_geojson), "--wait", "-o", result_file, env={"FOOTFALL_URL": proxy.url})

    assert run.returncode == 0, run.stderr
    assert re.search(r"Server disconnected without sending a response.*trying again", run.stderr), run.stderr
    (first_key, first_status), (second_key, second_status) = proxy.seen
    assert first_key == second_key and first_key.startswith("footfall-cli-")
    assert (first_status, second_status) == (201, 200)  # placed, then the same order answered again
    report = Report.objects.get(tenant=tenant)
    assert report.idempotency_key == first_key and report.status == Report.Status.SUCCEEDED
    assert result_file.read_text().startswith("start,end,hours,")

    # Another run is another logical order: a new key, a second report.
    again = footfall("--json", *order_args(square_geojson), env={"FOOTFALL_URL": proxy.url})
    assert again.returncode == 0 and proxy.seen[-1][0] != first_key
    assert Report.objects.filter(tenant=tenant).count() == 2


def test_an_area_whose_answer_is_lost_is_not_sent_again(footfall, city, tenant, losing_proxy, square_geojson):
    """Areas have no idempotency key: after a lost answer the client says so instead of saving it twice."""
    proxy = losing_proxy(("POST", "/areas"))

    run = footfall("areas", "add", "Block", square_geojson, env={"FOOTFALL_URL": proxy.url})

    assert run.returncode == Exit.UNAVAILABLE and "footfall areas list" in run.stderr
    assert len(proxy.seen) == 1 and Area.objects.filter(tenant=tenant).count() == 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


SERVER_CODE = re.compile(r"""(?:code=|_fail\(\s*|_refuse\(\s*|"code":\s*)"([a-z_]+)\"""")
# Product codes, and the month close's errors (billing_close_month, for finance): never an API answer.
NOT_ERROR_CODES = {"footfall", "dwell", "catchment", "od-matrix", "compare", "month_not_ended", "lines_not_sent"}


def test_every_error_code_the_api_returns_has_a_message_and_an_exit_code():
    """Codes written in the service's code, and DRF's own: a new code must be added to footfall.errors."""
    base = Path(settings.BASE_DIR)
    found = set()
    for folder in ("marketplace", "billing", "insights"):
        for path in (base / folder).rglob("*.py"):
            if "migrations" not in path.parts:
                found |= set(SERVER_CODE.findall(path.read_text()))
    found.add("date_out_of_range")  # through a constant (marketplace/api/bounds.py)
    drf = {
        "not_authenticated",
        "authentication_failed",
        "permission_denied",
        "not_found",
        "throttled",
        "parse_error",
        "unsupported_media_type",
        "method_not_allowed",
        "not_acceptable",
    }
    missing = sorted((found | drf) - NOT_ERROR_CODES - set(CODES) - set(FIELD_CODES))
    assert not missing, f"footfall.errors.CODES has no message for {missing}"
    assert all(hint and exit_code != Exit.OK for exit_code, hint in CODES.values())
