import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Exit 0 if a worker on this machine touched its heartbeat file lately (a health check), else 1."

    def add_arguments(self, parser):
        parser.add_argument("--max-age", type=float, default=None, help="seconds (default: three heartbeat intervals)")

    def handle(self, *args, max_age, **options):
        max_age = max_age or 3 * settings.WORKER_HEARTBEAT_SECONDS
        path = Path(settings.WORKER_HEARTBEAT_FILE)
        if not path.exists():
            raise CommandError(f"no heartbeat at {path}: the worker has not started")
        age = time.time() - path.stat().st_mtime
        if age > max_age:
            raise CommandError(f"the worker's last heartbeat is {age:.0f} s old (at most {max_age:.0f} s)")
        self.stdout.write(f"alive: last heartbeat {age:.1f} s ago")
