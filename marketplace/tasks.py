"""Thin Celery tasks of the buyer side."""

from celery import shared_task


@shared_task(bind=True, max_retries=None)
def deliver_webhook(self, delivery_id: str) -> None:
    from marketplace.services import webhook_deliver  # services queue this task, so they import this module

    wait = webhook_deliver(delivery_id=delivery_id)
    if wait is not None:
        raise self.retry(countdown=wait)
