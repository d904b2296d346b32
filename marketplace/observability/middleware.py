"""Each request in its own log scope, with its request id (the caller's X-Request-ID if sane,
else a new one, sent back in the response), counted and timed by route, and logged once."""

import logging
import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from marketplace.observability.context import log_context_update, log_scope, request_id_from_header
from marketplace.observability.metrics import request_observe, request_route

REQUEST_ID_HEADER = "X-Request-ID"

logger = logging.getLogger("marketplace.requests")


class RequestObservabilityMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = request_id_from_header(request.headers.get(REQUEST_ID_HEADER))
        started = time.monotonic()
        with log_scope(request_id=request_id, request=request):
            response = self.get_response(request)
            duration = time.monotonic() - started
            response[REQUEST_ID_HEADER] = request_id
            try:
                # A report's ?wait= is the buyer's choice, not the API being slow.
                answering = duration - getattr(request, "waited_seconds", 0.0)
                request_observe(request=request, response=response, duration_seconds=answering)
            except Exception:  # a full or unwritable metrics directory must not fail the request
                logger.exception("request not counted in the metrics")
            logger.info(
                "%s %s %s %.0f ms",
                request.method,
                request.path,
                response.status_code,
                duration * 1000,
                extra={
                    "method": request.method,
                    "route": request_route(request),
                    "status": response.status_code,
                    "duration_ms": round(duration * 1000, 1),
                },
            )
        return response

    def process_view(self, request: HttpRequest, view_func, view_args, view_kwargs) -> None:
        # A report's own URLs (reports/<pk>/...) name it: their log lines carry its id.
        match = request.resolver_match
        if match is not None and (match.url_name or "").startswith("report-") and "pk" in view_kwargs:
            log_context_update(report_id=str(view_kwargs["pk"]))
