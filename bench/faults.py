"""The fault runner (bench/faults): a private copy of the service behind TCP proxies, and for each
fault whether any order was lost, stuck or billed twice, and how long after the fault's end every
order was final.

The service (gunicorn, one Celery worker, beat) reaches PostgreSQL, RabbitMQ and a private Redis
only through proxies (bench/faults_proxy.py), which play the outages; the real servers are shared
and never touched. This process checks the outcome in the database directly, not through them.
Its own database (footfall_faults, from the template footfall_template), queue
(footfall-faults), Redis (port 6391) and logs (var/faults/)."""

import argparse
import collections
import contextlib
import dataclasses
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from bench.faults_proxy import DOWN, HUNG, UP, Proxy

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var" / "faults"
BIN = Path(sys.executable).parent
DATABASE, TEMPLATE = "footfall_faults", "footfall_template"  # bin/setup makes the template
QUEUE = "footfall-faults"
OUTBOUND_QUEUE = f"{QUEUE}-outbound"  # webhooks, Stripe, the outbox relay and the sweeper (settings)
POSTGRES, RABBITMQ = ("127.0.0.1", 5432), ("127.0.0.1", 5672)
REDIS_PORT = 6391
METRICS_DIR = VAR / "prometheus"  # the service's processes add up in /metrics (multiprocess mode)
METRICS_TOKEN = "bench-metrics-token"
TARGET_SECONDS = 90  # the target: every order final this long after an outage ends
STUCK_AFTER_SECONDS = 300  # a report not final this long after the fault's end counts as stuck
MAX_BACKENDS = 40  # the service's connections to PostgreSQL above which the poison worker is stopped
SCENARIOS = (
    "worker-kill",
    "postgres-restart",
    "broker-down",
    "broker-hang",
    "broker-hang-reset",
    "redis-down",
    "poison",
)

# The test city of tests/conftest.py: a 4 x 4 block, five local days around the spring DST change.
CITY_CELLS = [(col, row) for col in range(4) for row in range(4)]
CITY_START = dt.datetime(2026, 3, 26, 23, tzinfo=dt.UTC)
CITY_END = dt.datetime(2026, 3, 31, 22, tzinfo=dt.UTC)


def city_visits(cell: tuple[int, int], hour: dt.datetime) -> int:
    col, row = cell
    return 20 + 10 * col + row + hour.hour


# --- the service under test ---------------------------------------------------------------


class Service:
    """The web, worker and beat processes, each in a session of its own (so a kill reaches the
    whole process group), and the proxies they connect through. Unproxied (bench/api), they
    connect to the servers directly: the proxies are threads of this process, which carry
    every byte, and would measure themselves under load."""

    def __init__(
        self,
        *,
        database: str,
        worker_db_delay: float,
        proxied: bool = True,
        worker_concurrency: int = 2,
        outbound_pool: bool = False,
    ):
        self.database = database
        self.proxied = proxied
        self.worker_concurrency = worker_concurrency
        # As bin/run: the outbound queue in a threads pool of its own, beside the report processes.
        self.outbound_pool = outbound_pool
        self.proxies = {
            "db": Proxy("db", POSTGRES),  # the web's
            "db-worker": Proxy("db-worker", POSTGRES),  # the worker's and beat's: a slower link, see --worker-db-delay
            "broker": Proxy("broker", RABBITMQ),
            "redis": Proxy("redis", ("127.0.0.1", REDIS_PORT)),
        }
        self.proxies["db-worker"].delay = worker_db_delay
        self.web_url = f"http://127.0.0.1:{_free_port()}"
        self.processes: dict[str, subprocess.Popen] = {}

    def env(self, *, database_proxy: str, **extra: str) -> dict[str, str]:
        upstream = {"db": POSTGRES[1], "db-worker": POSTGRES[1], "broker": RABBITMQ[1], "redis": REDIS_PORT}
        port = lambda name: self.proxies[name].port if self.proxied else upstream[name]  # noqa: E731
        return {
            **os.environ,
            "DATABASE_URL": f"postgis://root@127.0.0.1:{port(database_proxy)}/{self.database}",
            "CELERY_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{port('broker')}//",
            "REDIS_URL": f"redis://127.0.0.1:{port('redis')}/0",
            "PROMETHEUS_MULTIPROC_DIR": str(METRICS_DIR),
            "METRICS_TOKEN": METRICS_TOKEN,
            "CELERY_QUEUE": QUEUE,
            "CACHE_KEY_PREFIX": "footfall-faults",
            "WORKER_HEARTBEAT_FILE": str(VAR / "worker-heartbeat"),
            "SECURE_SSL_REDIRECT": "false",
            # The runner orders one area again and again, from few tenants.
            "PRIVACY_QUERY_BUDGET": "100000",
            "MAX_REPORTS_IN_PROGRESS": "100",
            **extra,
        }

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        log = (VAR / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def start_web(self) -> None:
        port = self.web_url.rsplit(":", 1)[1]
        argv = [str(BIN / "gunicorn"), "marketplace.wsgi", "-b", f"127.0.0.1:{port}", "-w", "2"]
        argv += ["--worker-class", "gthread", "--threads", "16", "--keep-alive", "5"]  # as bin/run
        argv += ["--access-logfile", "-"]
        self.start("web", argv, self.env(database_proxy="db"))

    def start_worker(self, name: str = "worker", **extra_env: str) -> None:
        argv = [str(BIN / "celery"), "-A", "marketplace", "worker", "--pool", "prefork"]
        argv += ["--concurrency", str(self.worker_concurrency)]
        queues = QUEUE if self.outbound_pool else f"{QUEUE},{OUTBOUND_QUEUE}"
        argv += ["-Q", queues, "-n", f"faults-{name}@%h", "--loglevel", "INFO"]
        self.start(name, argv, self.env(database_proxy="db-worker", **extra_env))

    def start_outbound(self) -> None:
        argv = [str(BIN / "celery"), "-A", "marketplace", "worker", "--pool", "threads", "--concurrency", "8"]
        argv += ["-Q", OUTBOUND_QUEUE, "-n", "faults-outbound@%h", "--loglevel", "INFO"]
        self.start("outbound", argv, self.env(database_proxy="db-worker"))

    def start_beat(self) -> None:
        argv = [str(BIN / "celery"), "-A", "marketplace", "beat", "--loglevel", "INFO"]
        argv += ["--schedule", str(VAR / "celerybeat-schedule")]
        self.start("beat", argv, self.env(database_proxy="db-worker"))

    def kill(self, name: str) -> None:
        """SIGKILL the process and its children: nothing of it gets to clean up."""
        process = self.processes.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def stop(self, name: str, *, grace: float = 30) -> None:
        process = self.processes.pop(name)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name, grace=15)
        for proxy in self.proxies.values():
            proxy.stop()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.web_url}/readyz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise SystemExit(f"the web did not become ready in {timeout:.0f} s; see {VAR}/web.log")


# --- orders and their outcome -----------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    scenario: str
    statuses: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    accepted: list[str] = dataclasses.field(default_factory=list)
    fault_latencies: list[float] = dataclasses.field(default_factory=list)
    fault_end: float = 0.0  # time.time() when the fault ended
    row: dict = dataclasses.field(default_factory=dict)  # the table's columns, once checked
    note: str = ""


def order_body() -> dict:
    """The test city's 4 x 4 block by day over the five days it holds (as the tests order it)."""
    from tests.factories import five_day_order_body

    return five_day_order_body()


def place(service: Service, key: str, outcome: Outcome, *, during_fault: bool) -> None:
    """POST one order, as a buyer would (no retry), and record what came back."""
    started = time.monotonic()
    try:
        response = requests.post(
            f"{service.web_url}/api/v1/reports/",
            json=order_body(),
            headers={"Authorization": f"Api-Key {key}"},
            timeout=30,
        )
        status = str(response.status_code)
        if response.status_code == 201:
            outcome.accepted.append(response.json()["id"])
    except requests.RequestException as exc:
        status = type(exc).__name__
    outcome.statuses[status] += 1
    if during_fault:
        outcome.fault_latencies.append(time.monotonic() - started)


def place_until(service: Service, key: str, outcome: Outcome, *, until: float, every: float) -> threading.Thread:
    """Place an order every `every` seconds until `until` (time.monotonic()), in the background."""

    def loop():
        while time.monotonic() < until:
            began = time.monotonic()
            place(service, key, outcome, during_fault=True)
            time.sleep(max(0.0, every - (time.monotonic() - began)))

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def check(outcome: Outcome, tenant_id) -> None:
    """Wait until every report of the scenario's tenant is final (or stuck), then fill its row."""
    from django.db import close_old_connections
    from django.db.models import Count, Q

    from marketplace.models import Report

    deadline = outcome.fault_end + STUCK_AFTER_SECONDS
    while True:
        close_old_connections()
        reports = Report.objects.filter(tenant_id=tenant_id)
        open_ = reports.exclude(status__in=Report.FINAL_STATUSES).count()
        if not open_ or time.time() > deadline:
            break
        time.sleep(1)
    rows = list(
        reports.annotate(
            usage_count=Count("usage_lines", filter=Q(usage_lines__kind="usage"), distinct=True),
            release_count=Count("release", distinct=True),
        ).values("id", "status", "published_at", "finished_at", "usage_count", "release_count", "attempts", "error")
    )
    by_id = {str(row["id"]): row for row in rows}
    finished = [row["finished_at"] for row in rows if row["finished_at"]]
    last = max(finished).timestamp() - outcome.fault_end if finished else None
    published = [row["published_at"] for row in rows if row["published_at"]]
    last_sent = max(published).timestamp() - outcome.fault_end if published else None
    by_status = collections.Counter(row["status"] for row in rows)
    outcome.row = {
        "orders": len(outcome.accepted),
        "unacknowledged": len(set(by_id) - set(outcome.accepted)),  # committed, but the POST failed
        "final_after": last,
        "sent_after": last_sent,  # the last compute message sent (outbox), after the fault's end
        "lost": sum(1 for report_id in outcome.accepted if report_id not in by_id),
        "stuck": sum(1 for row in rows if row["status"] not in Report.FINAL_STATUSES),
        "duplicated": sum(1 for row in rows if row["usage_count"] > 1 or row["release_count"] > 1),
        "billed_unsucceeded": sum(1 for row in rows if row["status"] != "succeeded" and row["usage_count"]),
        "by_status": dict(by_status),
        "max_attempts": max((row["attempts"] for row in rows), default=0),
        "errors": sorted({row["error"] for row in rows if row["error"]}),
    }


# --- the scenarios -------------------------------------------------------------------------


def outage(
    service: Service, key: str, name: str, *, proxies: list[str], state: str, seconds: float, reset: bool = False
) -> Outcome:
    """Orders in flight when the proxies go `state`, one every 3 s while they are, two after.
    With `reset`, the outage ends with every connection closed (what was held is lost), not healed."""
    outcome = Outcome(name)
    for _ in range(3):
        place(service, key, outcome, during_fault=False)
    for proxy in proxies:
        service.proxies[proxy].set(state)
    poster = place_until(service, key, outcome, until=time.monotonic() + seconds, every=3)
    time.sleep(seconds)
    for proxy in proxies:
        if reset:
            service.proxies[proxy].set(DOWN)
        service.proxies[proxy].set(UP)
    outcome.fault_end = time.time()
    poster.join()
    for _ in range(2):
        place(service, key, outcome, during_fault=False)
    return outcome


def worker_kill(service: Service, key: str) -> Outcome:
    """SIGKILL the worker's process group while reports run; a new worker starts 5 s later."""
    from marketplace.models import Report

    outcome = Outcome("worker-kill")
    for _ in range(6):
        place(service, key, outcome, during_fault=False)
    deadline = time.monotonic() + 30
    while not Report.objects.filter(pk__in=outcome.accepted, status="running").exists():
        if time.monotonic() > deadline:
            outcome.note = "no report was running when the worker was killed"
            break
        time.sleep(0.05)
    running = Report.objects.filter(pk__in=outcome.accepted, status="running").count()
    service.kill("worker")
    outcome.note = outcome.note or f"{running} running at the kill"
    poster = place_until(service, key, outcome, until=time.monotonic() + 5, every=2)
    time.sleep(5)
    service.start_worker()
    outcome.fault_end = time.time()
    poster.join()
    return outcome


def poison(service: Service, key: str, *, statement_timeout: str) -> Outcome:
    """With the only worker one whose every query has a statement timeout, an order must fail
    with a reason after REPORT_MAX_ATTEMPTS claims, and free the tenant's slot; the normal
    worker is then back (the fault's end), and one more order must succeed."""
    from django.db import close_old_connections

    from marketplace.models import Report

    outcome = Outcome("poison")
    service.stop("worker")
    service.start_worker(
        "poison-worker", DJANGO_SETTINGS_MODULE="bench.faults_settings", FAULTS_STATEMENT_TIMEOUT=statement_timeout
    )
    time.sleep(5)  # the worker connects to the broker before the order comes
    outcome.fault_end = time.time()
    place(service, key, outcome, during_fault=True)
    deadline = time.monotonic() + STUCK_AFTER_SECONDS
    guard = ""
    while time.monotonic() < deadline:
        close_old_connections()
        if not Report.objects.filter(pk__in=outcome.accepted).exclude(status__in=Report.FINAL_STATUSES).exists():
            break
        # The PostgreSQL server is shared: a worker that leaks connections is stopped before it
        # takes them all.
        backends = database_backends()
        if backends > MAX_BACKENDS:
            guard = f"; stopped: {backends} connections open to {DATABASE}"
            break
        time.sleep(1)
    waited = time.time() - outcome.fault_end
    poisoned = Report.objects.filter(pk__in=outcome.accepted).values("status", "attempts").first() or {}
    service.stop("poison-worker")
    service.start_worker()
    outcome.fault_end = time.time()  # from here on, as in the other scenarios: the fault is over
    outcome.note = (
        f"the order was {poisoned.get('status')} after {poisoned.get('attempts')} attempts in {waited:.0f} s"
        f" with the poison worker alone{guard}; then one more order with the normal worker back"
    )
    place(service, key, outcome, during_fault=False)
    return outcome


def database_backends() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [DATABASE])
        return cursor.fetchone()[0]


# --- setup, the run, the table ------------------------------------------------------------------


def psql(database: str, sql: str) -> None:
    command = ["psql", "-h", POSTGRES[0], "-U", "postgres", "-d", database, "-v", "ON_ERROR_STOP=1", "-qtAc", sql]
    subprocess.run(command, check=True, env={**os.environ, "PGOPTIONS": "--client-min-messages=warning"})


def setup_database(direct_env: dict[str, str], database: str, tenant_names: list[str]) -> list[tuple[object, str]]:
    """A fresh database with the test city and a tenant (with a key) per name."""
    psql("postgres", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    psql("postgres", f"CREATE DATABASE {database} TEMPLATE {TEMPLATE} OWNER root")
    manage = [str(BIN / "python"), "manage.py"]
    subprocess.run(manage + ["migrate", "--noinput", "-v", "0"], cwd=ROOT, env=direct_env, check=True)
    # Messages a run before left for reports of a database now gone.
    subprocess.run(
        [str(BIN / "celery"), "-A", "marketplace", "purge", "-f", "-Q", f"{QUEUE},{OUTBOUND_QUEUE}"],
        cwd=ROOT,
        env=direct_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    from tests import grid
    from tests.factories import granted_tenant, raw_api_key

    grid.load_totals(VAR / "city.csv", cells=CITY_CELLS, start=CITY_START, end=CITY_END, visits=city_visits)
    tenants = [granted_tenant(name=name) for name in tenant_names]
    return [(tenant.pk, raw_api_key(tenant)) for tenant in tenants]


def start_redis() -> None:
    argv = ["redis-server", "--port", str(REDIS_PORT), "--save", "", "--appendonly", "no", "--daemonize", "yes"]
    argv += ["--pidfile", str(VAR / "redis.pid"), "--dir", str(VAR), "--logfile", str(VAR / "redis.log")]
    subprocess.run(argv, check=True)
    for _ in range(50):
        if (VAR / "redis.pid").exists():
            return
        time.sleep(0.1)


def stop_redis() -> None:
    pidfile = VAR / "redis.pid"
    if pidfile.exists():
        try:
            os.kill(int(pidfile.read_text()), signal.SIGTERM)
        except ProcessLookupError:
            pass


def print_table(outcomes: list[Outcome]) -> None:
    print(
        "\n| scenario | orders | statuses | max POST latency in fault (s) | final after fault end (s)"
        " | lost | stuck | duplicated | final statuses | note |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for outcome in outcomes:
        row = outcome.row
        statuses = ", ".join(f"{code}×{count}" for code, count in sorted(outcome.statuses.items()))
        latency = f"{max(outcome.fault_latencies):.2f}" if outcome.fault_latencies else "-"
        final = "-" if row["final_after"] is None else f"{row['final_after']:.1f}"
        verdict = "" if row["final_after"] is None or row["final_after"] <= TARGET_SECONDS else " (over target)"
        finals = ", ".join(f"{status} {count}" for status, count in sorted(row["by_status"].items()))
        extra = [outcome.note] if outcome.note else []
        if row["unacknowledged"]:
            extra.append(f"{row['unacknowledged']} committed but not acknowledged")
        if row["billed_unsucceeded"]:
            extra.append(f"{row['billed_unsucceeded']} billed without success")
        if row["sent_after"] is not None and row["sent_after"] > 0:
            extra.append(f"last message sent {row['sent_after']:.1f} s after the end")
        extra.append(f"max attempts {row['max_attempts']}")
        extra += [f"error: {error}" for error in row["errors"]]
        print(
            f"| {outcome.scenario} | {row['orders']} | {statuses} | {latency} | {final}{verdict} | {row['lost']}"
            f" | {row['stuck']} | {row['duplicated']} | {finals} | {'; '.join(extra)} |"
        )


@contextlib.contextmanager
def running_service(
    database: str,
    tenant_names: list[str],
    *,
    worker_db_delay: float,
    proxied: bool = True,
    worker_concurrency: int = 2,
    outbound_pool: bool = False,
) -> Iterator[tuple[Service, list[tuple[object, str]]]]:
    """The private service, running over a fresh database with the test city and a tenant (with a
    key) per name; everything it started is stopped after. Also bench/api's (unproxied)."""
    VAR.mkdir(parents=True, exist_ok=True)
    for log in VAR.glob("*.log"):
        log.unlink()
    shutil.rmtree(METRICS_DIR, ignore_errors=True)
    METRICS_DIR.mkdir()
    stop_redis()  # one a run before left, if any
    start_redis()
    service = Service(
        database=database,
        worker_db_delay=worker_db_delay,
        proxied=proxied,
        worker_concurrency=worker_concurrency,
        outbound_pool=outbound_pool,
    )
    # This process sets up and checks the database directly; the service goes through the proxies.
    direct_env = service.env(database_proxy="db")
    del direct_env["PROMETHEUS_MULTIPROC_DIR"]  # this process's own metrics are not the service's
    direct_env.update(
        DATABASE_URL=f"postgis://root@127.0.0.1:{POSTGRES[1]}/{database}",
        CELERY_BROKER_URL=f"amqp://guest:guest@127.0.0.1:{RABBITMQ[1]}//",
        REDIS_URL=f"redis://127.0.0.1:{REDIS_PORT}/0",
    )
    os.environ.update(direct_env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "marketplace.settings")
    import django

    django.setup()
    try:
        tenants = setup_database(direct_env, database, tenant_names)
        service.start_web()
        service.start_worker()
        if outbound_pool:
            service.start_outbound()
        service.start_beat()
        service.wait_ready()
        time.sleep(3)  # the worker and beat connect
        yield service, tenants
    finally:
        service.stop_all()
        stop_redis()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=SCENARIOS, help="run only this scenario (repeatable)")
    parser.add_argument(
        "--worker-db-delay",
        type=float,
        default=0.05,
        help="seconds each chunk between the worker and PostgreSQL waits, so a small report takes"
        " a few seconds and is caught running (default 0.05)",
    )
    parser.add_argument("--statement-timeout", default="1", help="the poison worker's statement_timeout (ms)")
    args = parser.parse_args()
    outcomes = []
    try:
        names = [f"Faults {scenario}" for scenario in SCENARIOS]
        with running_service(DATABASE, names, worker_db_delay=args.worker_db_delay) as (service, keyed):
            tenants = dict(zip(SCENARIOS, keyed, strict=True))
            runs = {
                "worker-kill": lambda key: worker_kill(service, key),
                "postgres-restart": lambda key: outage(
                    service, key, "postgres-restart", proxies=["db", "db-worker"], state=DOWN, seconds=25
                ),
                "broker-down": lambda key: outage(
                    service, key, "broker-down", proxies=["broker"], state=DOWN, seconds=54
                ),
                "broker-hang": lambda key: outage(
                    service, key, "broker-hang", proxies=["broker"], state=HUNG, seconds=30
                ),
                "broker-hang-reset": lambda key: outage(
                    service, key, "broker-hang-reset", proxies=["broker"], state=HUNG, seconds=30, reset=True
                ),
                "redis-down": lambda key: outage(service, key, "redis-down", proxies=["redis"], state=DOWN, seconds=30),
                "poison": lambda key: poison(service, key, statement_timeout=args.statement_timeout),
            }
            for scenario in args.only or SCENARIOS:
                tenant_id, key = tenants[scenario]
                print(f"{time.strftime('%H:%M:%S')} {scenario}...", flush=True)
                outcome = runs[scenario](key)
                check(outcome, tenant_id)
                print(f"{time.strftime('%H:%M:%S')} {scenario}: {outcome.row}", flush=True)
                outcomes.append(outcome)
    finally:
        if outcomes:
            print_table(outcomes)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


if __name__ == "__main__":
    main()
