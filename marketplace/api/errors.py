"""One error shape for every 4xx/5xx, built on drf-standardized-errors:

{"type": "validation_error" | "client_error" | "server_error",
 "code": "<code of the first error>", "message": "<human sentence>",
 "errors": [{"code": ..., "detail": ..., "attr": <field or null>}]}
"""

import logging

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import JsonResponse
from drf_standardized_errors.formatter import ExceptionFormatter
from drf_standardized_errors.handler import ExceptionHandler
from drf_standardized_errors.types import ErrorResponse
from rest_framework import exceptions, status

from marketplace.exceptions import ServiceError, ServiceUnavailable, TooManyRequests, error_body

logger = logging.getLogger(__name__)


class ErrorFormatter(ExceptionFormatter):
    def format_error_response(self, error_response: ErrorResponse) -> dict:
        return error_body(
            error_type=error_response.type,
            errors=[{"code": e.code, "detail": e.detail, "attr": e.attr} for e in error_response.errors],
        )


class ServiceErrorHandler(ExceptionHandler):
    def convert_known_exceptions(self, exc: Exception) -> Exception:
        if isinstance(exc, ServiceError):
            return _as_api_exception(exc)
        if isinstance(exc, OperationalError | InterfaceError):  # the database is away: not the caller's fault
            logger.warning("database unavailable: %s", exc)
            return _as_api_exception(
                ServiceUnavailable(
                    "the database is unavailable for a moment; nothing was changed, try again shortly",
                    code="database_unavailable",
                    retry_after=settings.DATABASE_RETRY_AFTER_SECONDS,
                )
            )
        return super().convert_known_exceptions(exc)

    def report_exception(self, exc: exceptions.APIException, response) -> None:
        # A 503 the service chose (database away, admission full) is an expected state, logged as a
        # warning above or where it was decided; reporting it as a server error would page someone.
        if isinstance(self.exc, ServiceUnavailable | OperationalError | InterfaceError):
            return
        super().report_exception(exc, response)


def _as_api_exception(exc: ServiceError) -> exceptions.APIException:
    detail = exceptions.ErrorDetail(exc.message, code=exc.code)
    if isinstance(exc, ServiceUnavailable):
        api_exception = exceptions.APIException(detail=detail, code=exc.code)
        api_exception.status_code, api_exception.wait = exc.status_code, exc.retry_after
        return api_exception
    if isinstance(exc, TooManyRequests):
        return exceptions.Throttled(wait=exc.retry_after, detail=detail, code=exc.code)
    if exc.status_code == status.HTTP_400_BAD_REQUEST:
        return exceptions.ValidationError({exc.field: [detail]} if exc.field else [detail])
    api_exception = exceptions.APIException(detail=detail, code=exc.code)
    api_exception.status_code = exc.status_code
    return api_exception


def not_found(request, exception=None) -> JsonResponse:
    body = error_body(error_type="client_error", errors=[{"code": "not_found", "detail": "Not found.", "attr": None}])
    return JsonResponse(body, status=404)


def server_error(request) -> JsonResponse:
    body = error_body(
        error_type="server_error", errors=[{"code": "error", "detail": "Server Error (500)", "attr": None}]
    )
    return JsonResponse(body, status=500)


def document_code_and_message(result, generator, request, public):
    """drf-spectacular hook: the error components gain the top-level code and message."""
    for name, component in result.get("components", {}).get("schemas", {}).items():
        if name.endswith("ErrorResponse") and "errors" in component.get("properties", {}):
            component["properties"]["code"] = {"type": "string", "description": "code of the first error"}
            component["properties"]["message"] = {"type": "string", "description": "the first error, as a sentence"}
            component.setdefault("required", []).extend(["code", "message"])
    return result
