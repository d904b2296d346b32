"""Thin Celery tasks of billing: they take ids and call services. Safe to run twice."""

from celery import shared_task


@shared_task
def sync_usage(line_id: int) -> str:
    from billing.services import usage_sync

    return usage_sync(line_id=line_id)


@shared_task
def sync_due_usage() -> int:
    """The outbox sweep: every line whose next try is due (new ones whose task was lost, and retries)."""
    from billing.services import usage_due, usage_sync

    due = usage_due()
    for line_id in due:
        usage_sync(line_id=line_id)
    return len(due)


@shared_task
def close_last_month() -> None:
    """Beat, on the 1st: invoice the month that just ended."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    from django.conf import settings
    from django.core.management import call_command
    from django.utils import timezone

    today = timezone.localdate(timezone=ZoneInfo(settings.BILLING_TIME_ZONE))
    last_month = today.replace(day=1) - dt.timedelta(days=1)
    call_command("billing_close_month", "--month", f"{last_month:%Y-%m}")
