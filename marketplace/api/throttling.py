from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle


class TenantRateThrottle(SimpleRateThrottle):
    """API_REQUESTS_PER_MINUTE per organisation, whichever of its keys calls; counted in Redis."""

    scope = "tenant"

    def get_rate(self) -> str:
        return f"{settings.API_REQUESTS_PER_MINUTE}/min"

    def get_cache_key(self, request, view) -> str | None:
        tenant = getattr(request.user, "tenant", None)
        if tenant is None:
            return None  # unauthenticated requests are refused before they count
        return self.cache_format % {"scope": self.scope, "ident": tenant.pk}
