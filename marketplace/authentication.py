import logging

from django.conf import settings
from django.core.cache import cache
from rest_framework import authentication, exceptions

from marketplace.exceptions import TooManyRequests
from marketplace.services import Principal, api_key_authenticate

KEYWORD = "Api-Key"
FAILURES_CACHE_KEY = "api-key-failures:{ip}"

logger = logging.getLogger(__name__)


def client_ip(request) -> str:
    """The caller's address: REMOTE_ADDR, or, behind TRUSTED_PROXY_COUNT proxies of our own, the
    address the outermost of them saw (X-Forwarded-For read from the right, which a client cannot forge)."""
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    proxies = settings.TRUSTED_PROXY_COUNT
    if proxies and len(forwarded) >= proxies:
        return forwarded[-proxies]
    return request.META.get("REMOTE_ADDR", "")


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Api-Key <key>`; the request then acts as the key's tenant and role.

    An address that presented API_KEY_FAILURES_PER_IP bad keys within API_KEY_FAILURE_WINDOW_SECONDS
    has its further bad keys answered 429 with Retry-After until the window ends. A valid key is
    always let in: behind one address (an office, a NAT) someone else's mistakes lock no one out."""

    def authenticate(self, request) -> tuple[Principal, object] | None:
        header = authentication.get_authorization_header(request)
        if not header:
            return None
        ip = client_ip(request)
        try:
            keyword, _, raw_key = header.decode("ascii").partition(" ")
        except UnicodeDecodeError:
            self._refuse(ip, "the Authorization header must be ASCII")
        if keyword != KEYWORD or not raw_key.strip() or " " in raw_key.strip():
            self._refuse(ip, f"use the header 'Authorization: {KEYWORD} <key>'")
        principal = api_key_authenticate(raw_key=raw_key.strip())
        if principal is None:
            self._refuse(ip, "the API key is unknown or revoked")
        return principal, principal.api_key

    def _refuse(self, ip: str, message: str) -> None:
        self._refuse_if_locked_out(ip)
        self._count_failure(ip)
        raise exceptions.AuthenticationFailed(message)

    def authenticate_header(self, request) -> str:
        return KEYWORD

    # A cache that fails must not stop authentication: the limit then fails open, logged.
    def _refuse_if_locked_out(self, ip: str) -> None:
        key = FAILURES_CACHE_KEY.format(ip=ip)
        try:
            failures = cache.get(key, 0)
            if failures < settings.API_KEY_FAILURES_PER_IP:
                return
            ttl = cache.ttl(key) if hasattr(cache, "ttl") else None  # django-redis knows the time left
        except Exception:
            logger.warning("API key failure limit not checked: the cache failed", exc_info=True)
            return
        retry_after = ttl if isinstance(ttl, int) and ttl > 0 else settings.API_KEY_FAILURE_WINDOW_SECONDS
        raise TooManyRequests(
            f"too many bad API keys from your address; try again in {retry_after} s",
            code="too_many_bad_api_keys",
            retry_after=retry_after,
        )

    def _count_failure(self, ip: str) -> None:
        key = FAILURES_CACHE_KEY.format(ip=ip)
        try:
            # The window starts at the first failure and is not extended by later ones.
            cache.add(key, 0, timeout=settings.API_KEY_FAILURE_WINDOW_SECONDS)
            cache.incr(key)
        except ValueError:  # expired between add and incr: this failure starts a new window
            cache.add(key, 1, timeout=settings.API_KEY_FAILURE_WINDOW_SECONDS)
        except Exception:
            logger.warning("API key failure not counted: the cache failed", exc_info=True)
