"""Thin Celery tasks of the engine: they call services. Safe to run twice.

The tasks that compute and sweep reports moved to marketplace.tasks; only their registered
names, insights.tasks.compute_report and insights.tasks.sweep_stuck_reports, stayed."""

from celery import shared_task

from insights.services import aggregates_retain, retention_cutoff


@shared_task
def drop_old_data() -> None:
    aggregates_retain(before=retention_cutoff())
