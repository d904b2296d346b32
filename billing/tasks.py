"""Thin Celery tasks of billing: they take ids and call services. Safe to run twice."""

from celery import shared_task


@shared_task
def sync_usage(line_id: int) -> str:
    from billing.services import usage_sync  # services queue this task, so they import this module

    return usage_sync(line_id=line_id)


@shared_task
def sync_due_usage() -> int:
    """The outbox sweep: every line whose next try is due (new ones whose task was lost, and retries)."""
    from billing.services import usage_sync_due

    return usage_sync_due()


@shared_task
def close_last_month() -> None:
    """Beat, on the 1st: close the month that just ended."""
    import datetime as dt

    from billing.selectors import current_billing_month
    from billing.services import month_close_all

    month_close_all(month=(current_billing_month() - dt.timedelta(days=1)).replace(day=1))
