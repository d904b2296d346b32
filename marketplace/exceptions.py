"""Errors raised by services. The API turns each into the one error shape."""


class ServiceError(Exception):
    """Bad input or a refused action: nothing was changed."""

    status_code = 400

    def __init__(self, message: str, *, code: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.field = field


class NotPermitted(ServiceError):
    status_code = 403


class Conflict(ServiceError):
    status_code = 409


class Unprocessable(ServiceError):
    status_code = 422
