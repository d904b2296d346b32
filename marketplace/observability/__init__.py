"""What operators watch the service by (docs/operations.md): the request, tenant, report and
task each log line belongs to (context), JSON or text log lines (logs), Prometheus metrics
(metrics, computed at scrape time from the database and the broker by selectors) and the
middleware and Celery signals that feed them."""
