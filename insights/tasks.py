"""Thin Celery tasks: they take ids and call services. Safe to run twice."""

from celery import shared_task
from django.conf import settings
from django.db import DatabaseError

from insights.services import aggregates_retain, retention_cutoff


@shared_task(bind=True, autoretry_for=(DatabaseError,), retry_backoff=True, max_retries=5)
def compute_report(self, report_id: str) -> None:
    # Imported here: marketplace.services queues this task, so it imports this module.
    from marketplace.services import RunOutcome, report_run

    if report_run(report_id=report_id) is RunOutcome.BUSY:
        # Another worker holds the report, or a killed one's connection is still closing.
        raise self.retry(countdown=settings.REPORT_LOCK_RETRY_SECONDS, max_retries=120)


@shared_task
def sweep_stuck_reports() -> int:
    from marketplace.services import reports_requeue_stuck

    return reports_requeue_stuck()


@shared_task
def drop_old_data() -> None:
    aggregates_retain(before=retention_cutoff())
