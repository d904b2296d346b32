import os

from celery import Celery

from marketplace.worker_heartbeat import Heartbeat

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "marketplace.settings")

app = Celery("marketplace")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.steps["worker"].add(Heartbeat)  # liveness: manage.py worker_alive

# The log context of tasks and JSON/text logs in the worker (docs/operations.md).
import marketplace.observability.celery_signals  # noqa: E402, F401
