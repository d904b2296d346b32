"""Errors raised by services, and the one shape every error response takes (error_body);
the API (marketplace.api.errors) turns each error into it."""


def error_body(*, error_type: str, errors: list[dict]) -> dict:
    """{"type", "code" (of the first error), "message" (a sentence), "errors": [{"code", "detail", "attr"}]}."""
    first = errors[0] if errors else {"code": error_type, "detail": "", "attr": None}
    message = f"{first['attr']}: {first['detail']}" if first["attr"] else first["detail"]
    return {"type": error_type, "code": first["code"], "message": message, "errors": errors}


class ServiceError(Exception):
    """Bad input or a refused action: nothing was changed."""

    status_code = 400

    def __init__(self, message: str, *, code: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.field = field


class PaymentRequired(ServiceError):
    """Over a spending limit the tenant set."""

    status_code = 402


class NotPermitted(ServiceError):
    status_code = 403


class Conflict(ServiceError):
    status_code = 409


class Unprocessable(ServiceError):
    status_code = 422


class TooManyRequests(ServiceError):
    """Over a limit that frees up with time: answered 429 with Retry-After."""

    status_code = 429

    def __init__(self, message: str, *, code: str, retry_after: int):
        super().__init__(message, code=code)
        self.retry_after = retry_after


class ServiceUnavailable(TooManyRequests):
    """The service cannot take the request now (its database is away, or it is full): 503 with
    Retry-After. Nothing was changed; the same request later may succeed."""

    status_code = 503
