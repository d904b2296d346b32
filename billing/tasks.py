"""Thin Celery tasks of billing: they take ids and call services. Safe to run twice."""

from celery import shared_task


@shared_task(bind=True, max_retries=3)
def sync_usage(self, line_id: int) -> str:
    from django.conf import settings

    from billing.sync import usage_sync  # services queue this task, so they import this module

    outcome = usage_sync(line_id=line_id)
    if outcome == "leased":  # a worker that died while sending it holds it: try once its lease ran out
        raise self.retry(countdown=settings.BILLING_SYNC_LEASE_SECONDS)
    return outcome


@shared_task
def sync_due_usage() -> int:
    """The outbox sweep: every line whose next try is due (new ones whose task was lost, and retries)."""
    from billing.sync import usage_sync_due

    return usage_sync_due()


@shared_task
def close_last_month() -> None:
    """Beat, on the 1st: close the month that just ended."""
    from billing import months
    from billing.closing import month_close_all

    month_close_all(month=months.previous_month(months.current_month()))
