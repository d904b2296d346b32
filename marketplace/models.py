import uuid
import zoneinfo

from django.conf import settings
from django.contrib.auth.models import Group
from django.contrib.gis.db import models
from django.contrib.postgres.indexes import GistIndex
from django.core.exceptions import ValidationError
from django.db.models import F, Q

from marketplace.policy import OrderPolicy, default_order_policy


def validate_time_zone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"unknown time zone {value!r}; use an IANA name such as Europe/Berlin")


class Role(models.TextChoices):
    OWNER = "owner"
    ANALYST = "analyst"
    VIEWER = "viewer"
    FINANCE = "finance"


class Tenant(models.Model):
    """A customer organisation. Its group carries the django-guardian grants."""

    class Kind(models.TextChoices):
        RETAIL = "retail"
        MUNICIPALITY = "municipality"
        OTHER = "other"

    # 140 so that its group, "tenant:<name>", fits auth.Group's 150 characters.
    name = models.CharField(max_length=140, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    time_zone = models.CharField(max_length=64, default="Europe/Berlin", validators=[validate_time_zone])
    group = models.OneToOneField(Group, on_delete=models.PROTECT, related_name="tenant")
    monthly_spending_limit_cents = models.PositiveBigIntegerField(
        "monthly spending limit (cents)",
        null=True,
        blank=True,
        help_text="in cents: 50000 is 500.00 EUR; orders that would bill more this month are refused; empty: no limit",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    """A user belongs to exactly one tenant, with one role."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="membership")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.user} ({self.role} of {self.tenant})"


class ApiKey(models.Model):
    """A tenant-scoped key. Only its prefix and a SHA-256 of the whole key are stored."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    # A person's key never has more rights than they do: it is revoked when they leave or lose its role.
    holder = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="api_keys",
        help_text="the member the key acts for; empty: an organisation key, e.g. for an integration",
    )
    name = models.CharField(max_length=100)
    role = models.CharField(max_length=20, choices=Role.choices)
    prefix = models.CharField(max_length=16, unique=True)
    hashed_key = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    # Final: the database refuses to clear or change it (migration 0022); rotate instead.
    revoked_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="empty: the key does not expire")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="the staff user who made it in the admin; empty: made over the API or by a command",
    )

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name})"

    def save(self, *args, **kwargs) -> None:
        if self.pk and self.revoked_at is None and ApiKey.objects.filter(pk=self.pk, revoked_at__isnull=False).exists():
            raise ValidationError(
                f"API key {self.prefix} is revoked, and revocation is final; rotate or make a new key"
            )
        super().save(*args, **kwargs)


class Product(models.Model):
    code = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    breakdowns = models.JSONField(default=list, blank=True, help_text="what a report may be broken down by")
    is_active = models.BooleanField(default=True)
    # What an order of this product must meet; empty: the service-wide default (docs/privacy.md).
    # The privacy of the numbers is the release's, the same for every product.
    privacy_min_area_km2 = models.FloatField(null=True, blank=True, help_text="the smallest area that may be ordered")
    privacy_min_cells = models.PositiveIntegerField(
        null=True, blank=True, help_text="the fewest grid cells an area covers"
    )
    privacy_query_budget = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="fair use: orders (each area counted) a tenant may place over overlapping cells and periods",
    )

    class Meta:
        ordering = ["code"]
        permissions = [("order_product", "Can order reports of this product")]
        constraints = [
            models.CheckConstraint(
                condition=Q(privacy_min_area_km2__isnull=True) | Q(privacy_min_area_km2__gte=0),
                name="product_privacy_min_area",
            ),
            models.CheckConstraint(
                condition=Q(privacy_min_cells__isnull=True) | Q(privacy_min_cells__gte=1),
                name="product_privacy_min_cells",
            ),
            models.CheckConstraint(
                condition=Q(privacy_query_budget__isnull=True) | Q(privacy_query_budget__gte=1),
                name="product_privacy_budget",
            ),
        ]

    def order_policy(self) -> OrderPolicy:
        return default_order_policy(
            min_area_km2=self.privacy_min_area_km2,
            min_cells=self.privacy_min_cells,
            query_budget=self.privacy_query_budget,
        )

    def __str__(self) -> str:
        return self.code


class Area(models.Model):
    """An area of interest drawn by a buyer, stored in EPSG:4326."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="areas")
    name = models.CharField(max_length=200)
    geometry = models.MultiPolygonField(srid=4326)
    area_km2 = models.FloatField()
    cell_count = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["tenant", "-created_at"])]

    def __str__(self) -> str:
        return self.name


class Breakdown(models.TextChoices):
    AGE_BAND = "age_band"
    GENDER = "gender"


class Granularity(models.TextChoices):
    HOUR = "hour"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


class Report(models.Model):
    """An order. It keeps a snapshot of its area, so deleting the area changes nothing."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    FINAL_STATUSES = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # A report's row is written four times (ordered, sent, claimed, finished): each index is
    # written again at each change of an indexed column, so it has only those its reads use.
    # The tenant's and the product's are the first columns of indexes in Meta.
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="reports", db_index=False)
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="reports", db_index=False)
    area = models.ForeignKey(Area, on_delete=models.SET_NULL, null=True, blank=True, related_name="reports")
    area_name = models.CharField(max_length=200)
    # Searched per tenant only (the fair-use count): indexed with the tenant in Meta.
    geometry = models.MultiPolygonField(srid=4326, spatial_index=False)
    area_km2 = models.FloatField()
    cell_count = models.PositiveIntegerField()
    start = models.DateTimeField()
    end = models.DateTimeField()
    granularity = models.CharField(max_length=10, choices=Granularity.choices)
    breakdowns = models.JSONField(default=list, blank=True)
    # compare: a second period, or a second area (snapshot), set side by side with the first.
    compare_start = models.DateTimeField(null=True, blank=True)
    compare_end = models.DateTimeField(null=True, blank=True)
    compare_area_name = models.CharField(max_length=200, blank=True)
    compare_geometry = models.MultiPolygonField(srid=4326, null=True, blank=True, spatial_index=False)
    compare_area_km2 = models.FloatField(null=True, blank=True)
    compare_cell_count = models.PositiveIntegerField(null=True, blank=True)
    regions = models.JSONField(
        default=list,
        blank=True,
        help_text="region codes: catchment, the home regions to list (empty: every one with visitors);"
        " od-matrix, the zones trips are counted between",
    )
    time_zone = models.CharField(max_length=64)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    progress = models.FloatField(default=0.0)
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    dataset_version = models.PositiveIntegerField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True, help_text="the result without its arrays of rows (ResultBatch)")
    query_budget_remaining = models.PositiveIntegerField(
        null=True, blank=True, help_text="overlapping orders the tenant may still place over these cells and period"
    )
    result_rows = models.PositiveIntegerField(
        null=True, blank=True, help_text="the rows of the result's downloads (CSV lines after the header)"
    )
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    request_fingerprint = models.CharField(max_length=64, blank=True)
    ordered_by_key = models.ForeignKey(ApiKey, on_delete=models.SET_NULL, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    queued_at = models.DateTimeField()
    # The outbox: a queued report with no published_at has a compute message still to send
    # (marketplace/services/outbox.py); it is set when the message is handed to the broker. No
    # index names it, so setting it rewrites no index entry (a HOT update): the relay finds
    # the unsent among the queued reports by the status index.
    published_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["tenant", "-created_at"]),
            models.Index(fields=["status", "queued_at"]),
            # The fair-use count: the tenant's orders whose area overlaps the new one (btree_gist),
            # whatever other tenants ordered over it; and its compare orders, not all its orders.
            GistIndex(fields=["tenant", "geometry"], name="report_tenant_geometry"),
            models.Index(
                fields=["tenant"],
                condition=Q(compare_geometry__isnull=False) | Q(compare_start__isnull=False),
                name="report_tenant_compared",
            ),
            # /metrics counts reports by product and status at each scrape: an index-only scan.
            models.Index(fields=["product", "status"], name="report_product_status"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="report_unique_idempotency_key_per_tenant",
            ),
            models.CheckConstraint(condition=Q(start__lt=models.F("end")), name="report_start_before_end"),
        ]

    def __str__(self) -> str:
        return f"{self.product_id} report {self.id}"


class ResultBatch(models.Model):
    """Up to ROWS_PER_BATCH rows of one of a succeeded report's arrays (series, segments, cells,
    regions, flows) as an Arrow IPC stream (insights/rows.py): stored with the report's success,
    read a few batches at a time by the pages and the downloads. The rest of the result, small,
    is Report.result."""

    report = models.ForeignKey(Report, on_delete=models.CASCADE, related_name="result_batches")
    name = models.CharField(max_length=20, help_text="the array: series, segments, cells, regions or flows")
    first_row = models.PositiveIntegerField(help_text="its first row's position in the array")
    rows = models.PositiveIntegerField()
    data = models.BinaryField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["report", "name", "first_row"], name="result_batch_unique")]

    def __str__(self) -> str:
        return f"{self.name} rows {self.first_row}-{self.first_row + self.rows} of report {self.report_id}"


class Release(models.Model):
    """A released report, for audit: who received what, from which data. Append-only: the
    database refuses to change or delete a row (migration 0010)."""

    report = models.OneToOneField(Report, on_delete=models.PROTECT, related_name="release")
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="releases")
    ordered_by_key = models.ForeignKey(ApiKey, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    product = models.CharField(max_length=40)
    geometry = models.MultiPolygonField(srid=4326)
    start = models.DateTimeField()
    end = models.DateTimeField()
    dataset_version = models.PositiveIntegerField()
    parameters = models.JSONField(help_text="the order as the engine read it: granularity, breakdowns, regions, ...")
    result_sha256 = models.CharField(
        max_length=64,
        help_text="SHA-256 of the released result as stored: its canonical JSON, then its batches' bytes in order",
    )
    released_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-released_at"]

    def __str__(self) -> str:
        return f"{self.product} for {self.tenant} at {self.released_at:%Y-%m-%d %H:%M}"


class Share(models.Model):
    """An area or a report shown to a viewer key: viewers see only what is shared with them."""

    viewer = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="shares")
    area = models.ForeignKey(Area, on_delete=models.CASCADE, null=True, blank=True, related_name="shares")
    report = models.ForeignKey(Report, on_delete=models.CASCADE, null=True, blank=True, related_name="shares")
    shared_by = models.ForeignKey(ApiKey, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(area__isnull=True, report__isnull=False) | Q(area__isnull=False, report__isnull=True),
                name="share_one_object",
            ),
            models.UniqueConstraint(fields=["viewer", "area"], name="share_area_once"),
            models.UniqueConstraint(fields=["viewer", "report"], name="share_report_once"),
        ]


class AuditEvent(models.Model):
    """Who did what: keys, shares, grants and orders. Append-only, like the release log."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="audit_events")
    actor = models.ForeignKey(
        ApiKey, on_delete=models.PROTECT, null=True, blank=True, related_name="+", help_text="empty: staff or a command"
    )
    # Who in the admin: kept for good (PROTECT), so a staff account that acted is deactivated, not deleted.
    staff_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="the account manager who acted in the admin; empty: an API key or a command",
    )
    action = models.CharField(max_length=40)
    target = models.CharField(max_length=200, help_text="what was acted on")
    details = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-at"]
        indexes = [models.Index(fields=["tenant", "-at"], name="audit_tenant_at")]

    def __str__(self) -> str:
        return f"{self.action} {self.target}"


class LicensedRegion(models.Model):
    """Where a tenant may order: a city its territory, a retailer its catchment. Granted to a
    tenant's group as the django-guardian permission order_in_region, for a validity period."""

    name = models.CharField(max_length=200)
    geometry = models.MultiPolygonField(srid=4326)
    valid_from = models.DateTimeField(null=True, blank=True, help_text="empty: from the start")
    valid_until = models.DateTimeField(null=True, blank=True, help_text="exclusive; empty: no end")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        permissions = [("order_in_region", "Can order reports inside this region")]
        constraints = [
            models.CheckConstraint(
                condition=Q(valid_from__isnull=True) | Q(valid_until__isnull=True) | Q(valid_until__gt=F("valid_from")),
                name="licensed_region_valid_period",
            )
        ]

    def __str__(self) -> str:
        return self.name


class WebhookEndpoint(models.Model):
    """Where a tenant wants to hear that a report finished. Deliveries are signed with its secret."""

    class Event(models.TextChoices):
        REPORT_SUCCEEDED = "report.succeeded"
        REPORT_FAILED = "report.failed"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.URLField(max_length=500)
    events = models.JSONField(default=list, help_text="the events to deliver: report.succeeded, report.failed")
    secret = models.CharField(
        max_length=100, help_text="whsec_ and the base64 of the HMAC-SHA256 key of the signatures; shown once"
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.url


class WebhookDelivery(models.Model):
    """One event for one endpoint, tried until it is taken (2xx) or the attempts run out
    (docs/webhooks.md). The row is the truth: the queue only carries its id, and the sweeper
    queues again what is due and was not sent."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=40)
    payload = models.JSONField()
    attempts = models.PositiveSmallIntegerField(default=0)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_response = models.TextField(blank=True, help_text="the start of the last answer, or the error")
    delivered_at = models.DateTimeField(null=True, blank=True)
    gave_up_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(
        null=True, blank=True, help_text="when the next try is due; empty once delivered or given up"
    )
    sending_until = models.DateTimeField(
        null=True, blank=True, help_text="a worker is sending it until then: one of its tenant's in-flight slots"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                name="webhook_delivery_due",
                condition=Q(delivered_at__isnull=True, gave_up_at__isnull=True),
            ),
        ]


class ProductGrantPeriod(models.Model):
    """When a tenant's grant of a product (the django-guardian permission order_product) is
    valid; a grant without one has no end."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="grant_periods")
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="+")
    valid_from = models.DateTimeField(null=True, blank=True)
    valid_until = models.DateTimeField(null=True, blank=True, help_text="exclusive")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "product"], name="one_grant_period_per_product"),
            models.CheckConstraint(
                condition=Q(valid_from__isnull=True) | Q(valid_until__isnull=True) | Q(valid_until__gt=F("valid_from")),
                name="grant_period_valid",
            ),
        ]

    def covers(self, moment) -> bool:
        return (self.valid_from is None or self.valid_from <= moment) and (
            self.valid_until is None or moment < self.valid_until
        )
