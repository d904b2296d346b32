"""Per-organisation limits: requests a minute, and reports queued or running at once."""

from django.core.cache import cache

from marketplace.models import Report, Role
from tests.errors import assert_error
from tests.factories import order_body

ORDER = order_body()


def test_an_organisation_over_its_requests_a_minute_gets_429_with_retry_after(tenant, client_for, settings):
    settings.API_REQUESTS_PER_MINUTE = 3
    cache.delete(f"throttle_tenant_{tenant.pk}")
    first, second = client_for(tenant, Role.ANALYST), client_for(tenant, Role.VIEWER)  # two keys, one budget

    answers = [caller.get("/api/v1/products/").status_code for caller in (first, second, first)]
    refused = second.get("/api/v1/products/")

    assert answers == [200, 200, 200]
    assert_error(refused, 429, "throttled")
    assert 0 < int(refused["Retry-After"]) <= 60


def test_too_many_reports_in_progress_are_refused_with_retry_after(api, city, settings):
    settings.MAX_REPORTS_IN_PROGRESS = 2
    for _ in range(2):  # on_commit does not run here: they stay queued
        assert api.post("/api/v1/reports/", ORDER, format="json").status_code == 201

    refused = api.post("/api/v1/reports/", ORDER, format="json")

    assert_error(refused, 429, "too_many_reports_in_progress")
    assert refused["Retry-After"] == "30"
    assert Report.objects.count() == 2
