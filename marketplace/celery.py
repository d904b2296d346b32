import os

from celery import Celery, signals

from marketplace.worker_heartbeat import Heartbeat

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "marketplace.settings")

app = Celery("marketplace")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.steps["worker"].add(Heartbeat)  # liveness: manage.py worker_alive


@signals.task_prerun.connect
@signals.task_postrun.connect
def close_old_database_connections(sender=None, **kwargs) -> None:
    """Around each task, as around each request: close a connection that is broken (a database
    restart) or older than CONN_MAX_AGE, keep the others (CELERY_DB_REUSE_MAX)."""
    if sender is not None and not getattr(sender.request, "is_eager", False):
        from django.db import close_old_connections

        close_old_connections()


@signals.worker_process_init.connect
def prepare_report_process(**kwargs) -> None:
    """Each worker process reads PROJ's database for its area weighing once, when it starts
    (about 100 ms), rather than in its first report's time; and starts its listener, which reads
    the catalogue of releases when one is committed rather than in the next report's time."""
    from insights.catalogue import listen_in_background
    from insights.weighing import prepare

    prepare()
    listen_in_background()


# The log context of tasks and JSON/text logs in the worker (docs/operations.md).
import marketplace.observability.celery_signals  # noqa: E402, F401
