import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "marketplace.settings")

app = Celery("marketplace")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# The log context of tasks and JSON/text logs in the worker (docs/operations.md).
import marketplace.observability.celery_signals  # noqa: E402, F401
