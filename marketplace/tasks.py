"""Thin Celery tasks of the buyer side: they take ids and call services. Safe to run twice.

The report tasks keep the names they were registered under in insights, so messages already
queued and the beat schedule still find them. Services queue these tasks, so the tasks import
the services when they run, not when this module loads."""

from celery import shared_task
from django.conf import settings
from django.db import DatabaseError


# A database that is away (restarting, failing over) is waited for, a try every few seconds
# for about ten minutes. Any other database error (a statement timeout, say) is tried
# REPORT_MAX_ATTEMPTS times, like a run that fails, and then fails the report with a reason:
# counted here, because it may strike before report_run has claimed the report and counted it.
@shared_task(name="insights.tasks.compute_report", bind=True, max_retries=60)
def compute_report(self, report_id: str, failures: int = 0) -> None:
    from marketplace.services import RunOutcome, database_error_is_transient, report_give_up, report_run

    try:
        outcome = report_run(report_id=report_id)
    except DatabaseError as exc:
        countdown = min(2**self.request.retries, 10)
        if database_error_is_transient(exc):
            raise self.retry(exc=exc, countdown=countdown) from exc
        failures += 1
        if failures >= settings.REPORT_MAX_ATTEMPTS:
            report_give_up(report_id=report_id, error=exc)
            return
        raise self.retry(exc=exc, countdown=countdown, args=(report_id,), kwargs={"failures": failures}) from exc
    if outcome is RunOutcome.BUSY:
        # Another worker holds the report, or a killed one's connection is still closing.
        raise self.retry(countdown=settings.REPORT_LOCK_RETRY_SECONDS, max_retries=120)


@shared_task(expires=60)
def publish_pending_reports() -> int:
    """The outbox relay: send the messages of committed orders that have none yet."""
    from marketplace.services.outbox import reports_publish_pending

    return reports_publish_pending()


@shared_task(name="insights.tasks.sweep_stuck_reports")
def sweep_stuck_reports() -> int:
    from marketplace.services import reports_requeue_stuck

    return reports_requeue_stuck()


@shared_task
def deliver_webhook(delivery_id: str) -> None:
    """One try of a webhook delivery (on the outbound queue); the service schedules the next."""
    from marketplace.services import webhook_deliver

    webhook_deliver(delivery_id=delivery_id)


@shared_task
def sweep_webhook_deliveries() -> int:
    """Beat, every minute: queue the deliveries that are due and were not sent."""
    from marketplace.services import webhook_deliveries_requeue

    return webhook_deliveries_requeue()


# Expires: a warm-up that waited an hour behind reports would warm what buyers already ordered.
# The soft limit stops a copy that overruns LOCAL_MONTHS_SECONDS (its part-written month is
# deleted) or an area that overruns REPORT_WARMUP_SECONDS (checked between areas).
@shared_task(expires=3600, soft_time_limit=settings.REPORT_WARMUP_SECONDS + settings.LOCAL_MONTHS_SECONDS + 30)
def warm_ordered_areas(release_id: int) -> int:
    """After a release: the node's copy of the recent months brought up to date, then the areas
    buyers re-order computed into the node's shared months (which then read that copy)."""
    from insights import local_months
    from marketplace.services import ordered_areas_warm

    local_months.write()
    return ordered_areas_warm(release_id=release_id)
