"""Request and response rules of the whole site: a bounded body, no caching of the API."""

from django.conf import settings
from django.http import JsonResponse
from django.utils.cache import add_never_cache_headers

from marketplace.exceptions import error_body


class RequestBodyLimitMiddleware:
    """A body longer than MAX_REQUEST_BODY_BYTES is refused with a 413 in the one error shape,
    before anything reads it (DRF reads the stream itself, past DATA_UPLOAD_MAX_MEMORY_SIZE)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        limit = settings.MAX_REQUEST_BODY_BYTES
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0  # Django reads no body without a valid length
        if length > limit:
            detail = f"the request body must be at most {limit} bytes, got {length}"
            body = error_body(
                error_type="client_error", errors=[{"code": "request_too_large", "detail": detail, "attr": None}]
            )
            return JsonResponse(body, status=413)
        return self.get_response(request)


class ApiNoStoreMiddleware:
    """Every API answer is one tenant's, and some carry secrets (a new key, a webhook's
    signing secret): no browser or proxy may keep a copy."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if request.path_info.startswith("/api/"):
            add_never_cache_headers(response)
        return response
