import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from django.conf import settings as django_settings
from django.db import connection

from marketplace.celery import app as celery_app
from marketplace.models import Report

WAIT_SECONDS = 90


@pytest.fixture(autouse=True)
def eager_celery():
    """Here tasks go through the real broker to real workers."""
    celery_app.conf.task_always_eager = False
    yield


class Workers:
    """Starts real Celery workers against the test database and the real broker."""

    def __init__(self, log_dir):
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen] = []
        db = connection.settings_dict
        self.env = {
            **os.environ,
            "DATABASE_URL": f"postgis://{db['USER']}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}",
            "CELERY_QUEUE": django_settings.CELERY_TASK_DEFAULT_QUEUE,
            "REPORT_LOCK_RETRY_SECONDS": "1",
            # The tests check the numbers against exact sums (as tests/conftest.py does in-process).
            "PRIVACY_ROUND_TO": str(django_settings.PRIVACY_ROUND_TO),
            # As in-process: no copy of the recent months after the fixtures' releases.
            "LOCAL_MONTHS_DIR": django_settings.LOCAL_MONTHS_DIR,
        }

    def start(
        self, queues: tuple[str, ...] | None = None, pool: str = "prefork", concurrency: int = 1
    ) -> subprocess.Popen:
        """A worker for the given queues: by default both, the reports' (CELERY_QUEUE) and the
        outbound one of webhooks and Stripe (OUTBOUND_QUEUE), as bin/run's two workers together."""
        queues = queues or (django_settings.CELERY_TASK_DEFAULT_QUEUE, django_settings.OUTBOUND_QUEUE)
        log = open(self.log_dir / f"worker-{len(self.processes)}.log", "w")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "marketplace",
                "worker",
                "--queues",
                ",".join(queues),
                "--pool",
                pool,
                "--concurrency",
                str(concurrency),
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--hostname",
                f"e2e-{uuid.uuid4().hex[:8]}@%h",
            ],
            cwd=django_settings.BASE_DIR,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so a kill takes its pool children too
        )
        self.processes.append(process)
        return process

    def kill(self, process: subprocess.Popen) -> None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self.kill(process)


@pytest.fixture
def workers(transactional_db, tmp_path):
    started = Workers(tmp_path)
    yield started
    started.stop_all()


def wait_for_status(report_id, *statuses: str) -> Report:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        report = Report.objects.get(pk=report_id)
        if report.status in statuses:
            return report
        time.sleep(0.2)
    raise AssertionError(f"report {report_id} is still {report.status}, not {statuses}, after {WAIT_SECONDS} s")
