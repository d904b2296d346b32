from csp.constants import SELF, UNSAFE_INLINE
from csp.decorators import csp_update
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import DefaultRouter

from billing.views import stripe_webhook
from marketplace.api.organisation import (
    ApiKeyViewSet,
    InvoiceViewSet,
    MemberViewSet,
    OrganisationViewSet,
    UsageViewSet,
    WebhookViewSet,
)
from marketplace.api.regions import LicensedRegionViewSet, RegionViewSet
from marketplace.api.views import AreaViewSet, ProductViewSet, QuoteViewSet, ReportViewSet
from marketplace.health import healthz, readyz
from marketplace.observability.metrics import metrics_view
from marketplace.web.views import home

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("products", ProductViewSet, basename="product")
router.register("areas", AreaViewSet, basename="area")
router.register("regions", RegionViewSet, basename="region")
router.register("licensed-regions", LicensedRegionViewSet, basename="licensed-region")
router.register("reports", ReportViewSet, basename="report")
router.register("api-keys", ApiKeyViewSet, basename="api-key")
router.register("webhooks", WebhookViewSet, basename="webhook")
router.register("members", MemberViewSet, basename="member")
router.register("quotes", QuoteViewSet, basename="quote")
router.register("invoices", InvoiceViewSet, basename="invoice")

# Downloads are named like files, so they take no trailing slash.
report_downloads = [
    path(
        f"reports/<uuid:pk>/result.{fmt}", ReportViewSet.as_view({"get": f"result_{fmt}"}), name=f"report-result-{fmt}"
    )
    for fmt in ("json", "csv", "parquet", "png", "geojson")
]
organisation = [
    path(
        "organisation/",
        OrganisationViewSet.as_view({"get": "retrieve", "patch": "partial_update"}),
        name="organisation",
    ),
    path("usage/", UsageViewSet.as_view({"get": "retrieve"}), name="usage"),
]

urlpatterns = [
    path("api/v1/", include(report_downloads + organisation + router.urls)),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves its start script from its own URL, so scripts stay 'self' only;
    # the page and Swagger UI set inline styles.
    path(
        "api/v1/docs/",
        csp_update({"style-src": [SELF, UNSAFE_INLINE]})(SpectacularSwaggerSplitView.as_view(url_name="schema")),
        name="docs",
    ),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("billing/stripe/webhook/", stripe_webhook, name="stripe-webhook"),
    path("admin/", admin.site.urls),
    path("opt-out/", include("pipeline.urls")),
    path("", home, name="home"),  # the buyers' page (docs/web.md)
]

handler404 = "marketplace.api.errors.not_found"
handler500 = "marketplace.api.errors.server_error"
