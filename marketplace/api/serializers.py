import copy
import math
from decimal import Decimal

from django.conf import settings
from django.contrib.gis.geos import GEOSException, LinearRing, MultiPolygon, Polygon
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from billing import tax as billing_tax
from insights.models import Region
from marketplace import selectors
from marketplace.api.bounds import SupportedDateTimeField
from marketplace.models import (
    ApiKey,
    Area,
    Breakdown,
    Granularity,
    LicensedRegion,
    Membership,
    Product,
    Report,
    Role,
    Tenant,
    WebhookDelivery,
    WebhookEndpoint,
)


class GeoJSONPolygonField(serializers.Field):
    """A GeoJSON Polygon or MultiPolygon, checked ring by ring, stored as a MultiPolygon.
    Its OpenAPI schema is marketplace.schema.GeoJSONPolygonFieldSchema."""

    def to_internal_value(self, data) -> MultiPolygon:
        if not isinstance(data, dict):
            self._fail("invalid_geometry", "geometry must be a GeoJSON object with type and coordinates")
        kind, coordinates = data.get("type"), data.get("coordinates")
        if kind not in ("Polygon", "MultiPolygon"):
            self._fail("invalid_geometry_type", f"geometry must be a GeoJSON Polygon or MultiPolygon, got {kind!r}")
        if not isinstance(coordinates, list) or not coordinates:
            self._fail("empty_geometry", "geometry has no coordinates")
        polygons = [coordinates] if kind == "Polygon" else coordinates
        self._check_size(polygons)
        shapes = [self._polygon(rings, number) for number, rings in enumerate(polygons, start=1)]
        try:
            geometry = MultiPolygon(shapes, srid=4326)
        except (GEOSException, TypeError, ValueError) as exc:
            self._fail("invalid_geometry", f"geometry could not be built: {exc}")
        if not geometry.valid:
            self._fail("invalid_geometry", f"geometry is not valid: {geometry.valid_reason}")
        return geometry

    def to_representation(self, value: MultiPolygon) -> dict:
        return {"type": "MultiPolygon", "coordinates": value.coords}

    def _polygon(self, rings, number: int) -> Polygon:
        if not isinstance(rings, list) or not rings:
            self._fail("empty_geometry", f"polygon {number} has no rings")
        linear_rings = []
        for ring_number, ring in enumerate(rings, start=1):
            where = f"polygon {number}, ring {ring_number}"
            if not isinstance(ring, list) or len(ring) < 4:
                got = len(ring) if isinstance(ring, list) else repr(ring)
                self._fail("invalid_ring", f"{where} needs at least 4 positions (a closed ring), got {got}")
            positions = [self._position(position, where) for position in ring]
            if positions[0] != positions[-1]:
                self._fail("unclosed_ring", f"{where} is not closed: its first and last positions must be equal")
            linear_rings.append(LinearRing(positions))
        return Polygon(*linear_rings)

    def _check_size(self, polygons: list) -> None:
        """Before any geometry is built: a 95,000-vertex polygon held a web worker for seconds."""
        if len(polygons) > settings.GEOMETRY_MAX_PARTS:
            self._fail(
                "too_many_parts",
                f"geometry may have at most {settings.GEOMETRY_MAX_PARTS} polygons, got {len(polygons)}",
            )
        vertices = sum(
            len(ring) for rings in polygons if isinstance(rings, list) for ring in rings if isinstance(ring, list)
        )
        if vertices > settings.GEOMETRY_MAX_VERTICES:
            self._fail(
                "too_many_vertices",
                f"geometry may have at most {settings.GEOMETRY_MAX_VERTICES} positions, got {vertices}",
            )

    def _position(self, position, where: str) -> tuple[float, float]:
        if (
            not isinstance(position, list)
            or len(position) not in (2, 3)
            or not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in position)
            or not all(math.isfinite(c) for c in position if isinstance(c, float))
        ):
            self._fail("invalid_position", f"{where}: a position must be [longitude, latitude], got {position!r}")
        longitude, latitude = position[0], position[1]
        if not (-180 <= longitude <= 180 and -90 <= latitude <= 90):
            self._fail("invalid_position", f"{where}: [{longitude}, {latitude}] is not a longitude/latitude pair")
        return float(longitude), float(latitude)  # in range, so even a JSON integer converts

    def _fail(self, code: str, message: str):
        raise serializers.ValidationError(message, code=code)


class ProductOutput(serializers.ModelSerializer):
    granted = serializers.SerializerMethodField(help_text="whether your organisation may order this product")
    breakdowns = serializers.ListField(child=serializers.CharField(), help_text="what an order may break down by")

    class Meta:
        model = Product
        fields = ["code", "name", "description", "breakdowns", "granted"]

    def get_granted(self, product: Product) -> bool:
        return product.pk in self.context["granted_ids"]


class AreaInput(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    geometry = GeoJSONPolygonField()


class AreaOutput(serializers.ModelSerializer):
    geometry = GeoJSONPolygonField()

    class Meta:
        model = Area
        fields = ["id", "name", "geometry", "area_km2", "cell_count", "created_at"]


class FieldsBuiltOnce:
    """A serializer whose fields are built once per class (a ModelSerializer's from the model),
    then copied for each use: DRF builds them again for every instance, half the cost of
    serializing a report, which every order and status read does.

    A shallow copy is enough: the fields kept are never bound (binding sets attributes on the
    copy), and what copies share (choices, validators, a list's child) is only read. A deep copy
    rebuilt every field, a third of an order's serializing."""

    def get_fields(self) -> dict:
        built = type(self).__dict__.get("_fields_built")
        if built is None:
            built = super().get_fields()
            type(self)._fields_built = built
        return {name: copy.copy(field) for name, field in built.items()}


class ReportInput(FieldsBuiltOnce, serializers.Serializer):
    product = serializers.CharField(max_length=40, help_text="a product code, e.g. footfall")
    area = serializers.UUIDField(required=False, help_text="id of a saved area; or give geometry instead")
    geometry = GeoJSONPolygonField(required=False, help_text="an area drawn for this order only")
    name = serializers.CharField(max_length=200, required=False, default="", help_text="a name for an inline area")
    start = SupportedDateTimeField(
        help_text="inclusive; a time without offset is read in your time zone; years 2000 to 2100"
    )
    end = SupportedDateTimeField(help_text="exclusive")
    granularity = serializers.ChoiceField(choices=Granularity.choices)
    breakdowns = serializers.ListField(
        child=serializers.ChoiceField(choices=Breakdown.choices),
        required=False,
        default=list,
        max_length=len(Breakdown.choices),
        help_text="segments to break the counts down by, as the product offers (see products)",
    )

    compare_start = SupportedDateTimeField(
        required=False, help_text="compare only: the start of the comparison period, e.g. the same week last year"
    )
    compare_end = SupportedDateTimeField(
        required=False, help_text="compare only: its end; it must hold as many buckets as the period"
    )
    compare_area = serializers.UUIDField(required=False, help_text="compare only: a saved area to compare with")
    compare_geometry = GeoJSONPolygonField(required=False, help_text="compare only: an area drawn to compare with")
    compare_name = serializers.CharField(max_length=200, required=False, default="")
    regions = serializers.ListField(
        child=serializers.CharField(max_length=20),
        required=False,
        default=list,
        max_length=1000,
        help_text="catchment: the home regions to list (default: every one with visitors); od-matrix: the zones"
        " to count trips between (default: every zone the area overlaps); codes from GET /api/v1/regions/",
    )
    quote = serializers.UUIDField(
        required=False,
        help_text="a quote's id (POST /api/v1/quotes/ with the same body): the report is billed at its price",
    )

    def validate_breakdowns(self, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise serializers.ValidationError("each breakdown may be named once", code="repeated_breakdown")
        return value


class ReportOutput(FieldsBuiltOnce, serializers.ModelSerializer):
    product = serializers.CharField(source="product.code")
    area = serializers.UUIDField(source="area_id", allow_null=True)
    result = serializers.SerializerMethodField(
        help_text=(
            "the result document once succeeded, when it has at most RESULT_INLINE_MAX_ROWS rows"
            " (2000 by default); a larger one is null here: page through rows/ or download it"
            " (docs/api-results.md). Its metric names what it counts: footfall and compare `person_hours`"
            " (people present, summed over each bucket's hours) and `average_present`; dwell `visits`"
            " (arrivals); catchment `person_hours`; od-matrix `trips`. Deprecated, kept for one release"
            " with the same values: `visits` (footfall, compare; use `person_hours`), `comparison_visits`"
            " (use `comparison_person_hours`), `visitors` (dwell: use `visits`; catchment: use `person_hours`)."
        )
    )

    price = serializers.SerializerMethodField(help_text="what the report is billed when it succeeds, and its quote")

    @extend_schema_field(serializers.JSONField(allow_null=True))
    def get_result(self, report: Report) -> dict | None:
        if report.result_rows is None or report.result_rows > settings.RESULT_INLINE_MAX_ROWS:
            return None
        return selectors.report_result_document(report=report)

    @extend_schema_field(serializers.JSONField(allow_null=True))
    def get_price(self, report: Report) -> dict | None:
        quote = getattr(report, "quote", None)
        if quote is None:
            return None
        return {
            "quote": str(quote.pk),
            "quantity": str(quote.quantity),
            "unit": quote.unit,
            "amount": money(quote.amount_cents),
            "currency": quote.currency,
        }

    class Meta:
        model = Report
        fields = [
            "id",
            "product",
            "status",
            "progress",
            "area",
            "area_name",
            "area_km2",
            "cell_count",
            "start",
            "end",
            "granularity",
            "breakdowns",
            "regions",
            "compare_start",
            "compare_end",
            "compare_area_name",
            "compare_area_km2",
            "compare_cell_count",
            "time_zone",
            "dataset_version",
            "error",
            "created_at",
            "started_at",
            "finished_at",
            "query_budget_remaining",
            "price",
            "result_rows",
            "result",
        ]


class ReportSummaryOutput(ReportOutput):
    class Meta(ReportOutput.Meta):
        fields = [field for field in ReportOutput.Meta.fields if field != "result"]


class ResultRowsPage(serializers.Serializer):
    count = serializers.IntegerField(help_text="the result's rows in all")
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = serializers.ListField(
        child=serializers.DictField(), help_text="rows as in the CSV download: per bucket (and segment), region or flow"
    )


class RegionOutput(serializers.ModelSerializer):
    geometry = GeoJSONPolygonField(source="geometry_4326", read_only=True)
    area_km2 = serializers.SerializerMethodField()

    class Meta:
        model = Region
        fields = ["code", "name", "area_km2", "geometry"]

    def get_area_km2(self, region) -> float:
        return round(region.area_m2.sq_km, 3)


class LicensedRegionOutput(serializers.ModelSerializer):
    geometry = GeoJSONPolygonField(
        source="outline", read_only=True, help_text="the boundary simplified to about 10 m, to draw on a map"
    )

    class Meta:
        model = LicensedRegion
        fields = ["name", "valid_from", "valid_until", "geometry"]


class ShareInput(serializers.Serializer):
    viewer = serializers.CharField(max_length=16, help_text="the prefix of a viewer key of your organisation")


class ApiKeyInput(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    role = serializers.ChoiceField(choices=Role.choices)
    expires_at = SupportedDateTimeField(
        required=False, allow_null=True, help_text="empty: never expires; years 2000 to 2100"
    )
    member = serializers.EmailField(
        required=False,
        allow_null=True,
        help_text="the member the key acts for (their role or viewer); revoked when they leave."
        " Empty: an organisation key, e.g. for an integration",
    )


class ApiKeyOutput(serializers.ModelSerializer):
    id = serializers.IntegerField(read_only=True)
    member = serializers.EmailField(source="holder.email", allow_null=True, default=None, read_only=True)

    class Meta:
        model = ApiKey
        fields = ["id", "prefix", "name", "role", "member", "created_at", "last_used_at", "expires_at", "revoked_at"]


class ApiKeyCreated(ApiKeyOutput):
    key = serializers.CharField(help_text="the whole key: shown this once, stored only as a hash")

    class Meta(ApiKeyOutput.Meta):
        fields = [*ApiKeyOutput.Meta.fields, "key"]


class WebhookInput(serializers.Serializer):
    url = serializers.URLField(
        max_length=500,
        help_text="https:// only, to a host on the public internet: loopback, private, link-local, multicast and"
        " reserved addresses are refused (docs/webhooks.md)",
    )
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=WebhookEndpoint.Event.choices),
        help_text="report.succeeded, report.failed",
    )


class WebhookOutput(serializers.ModelSerializer):
    class Meta:
        model = WebhookEndpoint
        fields = ["id", "url", "events", "is_active", "created_at"]


class WebhookCreated(WebhookOutput):
    secret = serializers.CharField(
        help_text="the signing secret, whsec_ and the base64 of the HMAC-SHA256 key (Standard Webhooks):"
        " shown this once"
    )

    class Meta(WebhookOutput.Meta):
        fields = [*WebhookOutput.Meta.fields, "secret"]


class WebhookDeliveryOutput(serializers.ModelSerializer):
    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "event",
            "attempts",
            "last_status_code",
            "last_response",
            "delivered_at",
            "gave_up_at",
            "next_attempt_at",
            "created_at",
            "updated_at",
        ]


class MemberInput(serializers.Serializer):
    email = serializers.EmailField()
    role = serializers.ChoiceField(choices=Role.choices)


class MemberRoleInput(serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices)


class MemberOutput(serializers.ModelSerializer):
    email = serializers.EmailField(source="user.email")

    class Meta:
        model = Membership
        fields = ["id", "email", "role", "created_at"]


def money(cents: int) -> str:
    """Cents as a decimal amount, e.g. 1234 -> "12.34"."""
    return str((Decimal(cents) / 100).quantize(Decimal("0.01")))


class QuoteCheck(serializers.Serializer):
    check = serializers.CharField(
        help_text=(
            "entitlement, privacy_minimums, licensed_region, payment, reports_in_progress, fair_use, spending_limit"
        )
    )
    passed = serializers.BooleanField()
    code = serializers.CharField(allow_null=True, help_text="the error code an order would get")
    detail = serializers.CharField(help_text="why it would be refused")


class QuoteOutput(serializers.Serializer):
    id = serializers.UUIDField(help_text="give it as the order's quote to be billed this price")
    product = serializers.CharField()
    quantity = serializers.DecimalField(max_digits=16, decimal_places=2)
    unit = serializers.CharField(help_text="cell_day: cells in the area × days; zone_day: zones × days")
    unit_price = serializers.DecimalField(max_digits=12, decimal_places=6)
    amount = serializers.CharField(help_text="quantity × unit price, rounded to the cent: net, before VAT")
    currency = serializers.CharField()
    vat_treatment = serializers.CharField(
        help_text="domestic (VAT at vat_rate), reverse_charge (EU business: 0 %, you account for the VAT) or export"
    )
    vat_rate = serializers.DecimalField(max_digits=5, decimal_places=2, help_text="percent")
    net = serializers.CharField(help_text="the same as amount")
    vat = serializers.CharField(help_text="VAT on the net amount, rounded to the cent")
    gross = serializers.CharField(help_text="net plus VAT: what the invoice will charge for it")
    expires_at = serializers.DateTimeField(help_text="an order with this quote must be placed before")
    orderable = serializers.BooleanField(help_text="true when every check passed")
    checks = QuoteCheck(many=True)

    @staticmethod
    def of(quote, checks: list[dict]) -> dict:
        taxed = billing_tax.taxed(tenant=quote.tenant, net_cents=quote.amount_cents)
        return {
            "id": quote.pk,
            "product": quote.product,
            "quantity": quote.quantity,
            "unit": quote.unit,
            "unit_price": quote.unit_price,
            "amount": money(quote.amount_cents),
            "currency": quote.currency,
            "vat_treatment": taxed.treatment,
            "vat_rate": taxed.rate,
            "net": money(taxed.net_cents),
            "vat": money(taxed.vat_cents),
            "gross": money(taxed.gross_cents),
            "expires_at": quote.expires_at,
            "orderable": all(check["passed"] for check in checks),
            "checks": checks,
        }


class OrganisationOutput(serializers.ModelSerializer):
    monthly_spending_limit = serializers.SerializerMethodField(help_text="in the currency of the prices; null: none")
    spent_this_month = serializers.SerializerMethodField(help_text="billed less credited this billing month")
    committed = serializers.SerializerMethodField(help_text="what queued and running reports will bill")

    class Meta:
        model = Tenant
        fields = ["name", "kind", "time_zone", "monthly_spending_limit", "spent_this_month", "committed"]

    def get_monthly_spending_limit(self, tenant) -> str | None:
        limit = tenant.monthly_spending_limit_cents
        return None if limit is None else money(limit)

    def get_spent_this_month(self, tenant) -> str:
        return money(self.context["spent_cents"])

    def get_committed(self, tenant) -> str:
        return money(self.context["committed_cents"])


class OrganisationInput(serializers.Serializer):
    monthly_spending_limit = serializers.DecimalField(
        max_digits=14, decimal_places=2, min_value=Decimal(0), allow_null=True, help_text="null: no limit"
    )


class UsageProduct(serializers.Serializer):
    product = serializers.CharField()
    unit = serializers.CharField()
    currency = serializers.CharField()
    reports = serializers.IntegerField(help_text="reports billed")
    quantity = serializers.DecimalField(max_digits=16, decimal_places=2)
    billed = serializers.SerializerMethodField()
    credited = serializers.SerializerMethodField()
    net = serializers.SerializerMethodField()

    def get_billed(self, row) -> str:
        return money(row["billed_cents"])

    def get_credited(self, row) -> str:
        return money(row["credited_cents"])

    def get_net(self, row) -> str:
        return money(row["net_cents"])


class UsageOutput(serializers.Serializer):
    period = serializers.CharField(help_text="YYYY-MM, a billing month: a calendar month of time_zone (the seller's)")
    time_zone = serializers.CharField()
    products = UsageProduct(many=True)


class InvoiceOutput(serializers.Serializer):
    id = serializers.CharField(source="stripe_invoice_id", help_text="Stripe's invoice id")
    number = serializers.CharField()
    status = serializers.CharField(help_text="draft, open, paid, void or uncollectible")
    currency = serializers.CharField()
    amount_due = serializers.SerializerMethodField()
    amount_paid = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    paid_at = serializers.DateTimeField(allow_null=True)
    payment_failed_at = serializers.DateTimeField(allow_null=True, help_text="set while a failed payment is unpaid")
    hosted_invoice_url = serializers.CharField(
        help_text="Stripe's page of the invoice: pay it there (card or SEPA debit) or download it"
    )
    invoice_pdf = serializers.CharField(help_text="the invoice as a PDF")
    month = serializers.DateField(allow_null=True, help_text="the billing month it is for (its first day)")
    net = serializers.SerializerMethodField(help_text="before VAT")
    vat = serializers.SerializerMethodField()

    def get_net(self, invoice) -> str:
        return money(invoice.subtotal_cents)

    def get_vat(self, invoice) -> str:
        return money(invoice.tax_cents)

    def get_amount_due(self, invoice) -> str:
        return money(invoice.amount_due_cents)

    def get_amount_paid(self, invoice) -> str:
        return money(invoice.amount_paid_cents)
