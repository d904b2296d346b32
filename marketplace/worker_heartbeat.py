"""The worker's liveness: while its main loop runs, it touches a file every few seconds, and
`manage.py worker_alive` (a container's health check) says whether the file is fresh."""

from pathlib import Path

from celery import bootsteps
from django.conf import settings


class Heartbeat(bootsteps.StartStopStep):
    """Runs on the worker's own timer, in its main process: the file goes stale when that loop
    hangs or the process dies, not when the pool's children are busy computing reports."""

    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self.timer_entry = None

    def start(self, worker):
        self.touch()
        self.timer_entry = worker.timer.call_repeatedly(settings.WORKER_HEARTBEAT_SECONDS, self.touch, priority=10)

    def stop(self, worker):
        if self.timer_entry is not None:
            self.timer_entry.cancel()

    @staticmethod
    def touch() -> None:
        path = Path(settings.WORKER_HEARTBEAT_FILE)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
