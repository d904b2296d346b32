from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import User
from django.db.models import Count, Q, Sum
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from guardian.admin import GuardedModelAdmin

from billing import services as billing_services
from billing.models import UsageLine
from insights.admin import ReadOnlyAdmin
from insights.boundaries import boundary_from_text, boundary_svg
from marketplace import selectors, services
from marketplace.exceptions import ServiceError
from marketplace.models import (
    ApiKey,
    Area,
    AuditEvent,
    LicensedRegion,
    Membership,
    Product,
    Release,
    Report,
    Role,
    Tenant,
)

admin.site.unregister(User)


@admin.register(User)
class PeopleAdmin(UserAdmin):
    """Account managers add and edit the people of customer organisations; only superusers
    see staff accounts or hand out staff rights, so no one can raise their own."""

    STAFF_RIGHTS = ("is_staff", "is_superuser", "groups", "user_permissions")

    def get_queryset(self, request):
        people = super().get_queryset(request)
        return people if request.user.is_superuser else people.filter(is_staff=False, is_superuser=False)

    def get_readonly_fields(self, request, obj=None):
        fields = super().get_readonly_fields(request, obj)
        return fields if request.user.is_superuser else (*fields, *self.STAFF_RIGHTS)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "user":  # customers' people only: staff accounts never belong to a tenant
            kwargs["queryset"] = User.objects.filter(is_staff=False, is_superuser=False).order_by("username")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class ApiKeyInline(admin.TabularInline):
    model = ApiKey
    extra = 0
    fields = ["name", "prefix", "role", "holder", "created_at", "last_used_at", "expires_at", "revoked_at"]
    # A key's role and holder are set when it is made, within the holder's role; revoke and make another.
    readonly_fields = ["prefix", "role", "holder", "created_at", "last_used_at"]
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False  # keys are created with create_api_key, which shows the secret once


class TenantForm(forms.ModelForm):
    """A tenant with what it may order: its products and licensed regions (django-guardian grants)."""

    products = forms.ModelMultipleChoiceField(Product.objects.filter(is_active=True), required=False)
    licensed_regions = forms.ModelMultipleChoiceField(LicensedRegion.objects.all(), required=False)

    class Meta:
        model = Tenant
        fields = ["name", "kind", "time_zone", "monthly_spending_limit_cents"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["products"].initial = list(selectors.product_granted_list(tenant=self.instance))
            self.fields["licensed_regions"].initial = selectors.licensed_region_list(tenant=self.instance, at=None)


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    form = TenantForm
    list_display = ["name", "kind", "time_zone", "created_at"]
    list_filter = ["kind"]
    search_fields = ["name"]
    inlines = [MembershipInline, ApiKeyInline]
    readonly_fields = ["this_month", "licences"]
    actions = ["create_owner_key"]

    def save_model(self, request, obj, form, change):
        if not change:  # a tenant comes with its own group, which carries its grants
            created = services.tenant_create(name=obj.name, kind=obj.kind, time_zone=obj.time_zone)
            obj.pk, obj.group = created.pk, created.group
        else:
            super().save_model(request, obj, form, change)
        services.tenant_entitlements_set(
            tenant=obj, products=form.cleaned_data["products"], regions=form.cleaned_data["licensed_regions"]
        )

    @admin.action(description="Create an owner API key (shown once)")
    def create_owner_key(self, request, queryset):
        for tenant in queryset:
            _, raw_key = services.api_key_create(tenant=tenant, name="owner key (admin)", role=Role.OWNER)
            self.message_user(
                request,
                f"{tenant.name}: owner key {raw_key} (shown only now; hand it over securely)",
                messages.WARNING,
            )

    @admin.display(description="This month's orders")
    def this_month(self, tenant: Tenant) -> str:
        """At a glance: the month's orders per product and status."""
        if tenant.pk is None:
            return "-"
        start = timezone.localdate().replace(day=1)
        rows = (
            Report.objects.filter(tenant=tenant, created_at__date__gte=start)
            .values_list("product__code", "status")
            .annotate(count=Count("id"))
            .order_by("product__code", "status")
        )
        if not rows:
            return f"no orders since {start:%d %B %Y}"
        billed = UsageLine.objects.filter(tenant=tenant, created_at__date__gte=start).aggregate(
            usage=Sum("amount_cents", filter=Q(kind=UsageLine.Kind.USAGE)),
            credits=Sum("amount_cents", filter=Q(kind=UsageLine.Kind.CREDIT)),
        )
        orders = format_html_join(
            mark_safe("<br>"), "{}: {} {}", ((product, count, status) for product, status, count in rows)
        )
        usage, credits = (billed["usage"] or 0) / 100, -(billed["credits"] or 0) / 100
        limit = tenant.monthly_spending_limit_cents
        try:
            billing_services.check_payment_standing(tenant=tenant)
            standing = "payments in order"
        except ServiceError as overdue:
            standing = f"ORDERS STOPPED: {overdue.message}"
        return format_html(
            "{}<br>billed {} EUR, credited {} EUR; spending limit {}<br>{}",
            orders,
            f"{usage:,.2f}",
            f"{credits:,.2f}",
            "none" if limit is None else f"{limit / 100:,.2f} EUR a month",
            standing,
        )

    @admin.display(description="Licensed regions and products")
    def licences(self, tenant: Tenant) -> str:
        if tenant.pk is None:
            return "-"
        regions = selectors.licensed_region_list(tenant=tenant, at=None)
        products = selectors.product_granted_list(tenant=tenant)
        return format_html(
            "regions: {}<br>products: {}",
            ", ".join(region.name for region in regions) or "none",
            ", ".join(product.code for product in products) or "none",
        )


@admin.register(Product)
class ProductAdmin(GuardedModelAdmin):
    list_display = ["code", "name", "is_active", "privacy_min_area_km2", "privacy_min_cells", "privacy_query_budget"]
    fieldsets = [
        (None, {"fields": ["code", "name", "description", "breakdowns", "is_active"]}),
        (
            "Orders (empty: the service-wide default; the numbers' privacy is the release's, see docs/privacy.md)",
            {"fields": ["privacy_min_area_km2", "privacy_min_cells", "privacy_query_budget"]},
        ),
    ]


class BoundaryMap:
    """A read-only boundary shown as a drawing rather than an editable map."""

    @admin.display(description="drawn to scale")
    def boundary(self, obj) -> str:
        return boundary_svg(obj.geometry)


@admin.register(Area)
class AreaAdmin(BoundaryMap, admin.ModelAdmin):
    list_display = ["name", "tenant", "area_km2", "cell_count", "created_at"]
    list_filter = ["tenant"]
    search_fields = ["name", "tenant__name"]
    exclude = ["geometry"]
    readonly_fields = ["boundary", "area_km2", "cell_count"]


REPORT_SHAPES = ["geometry", "compare_geometry"]


@admin.register(Report)
class ReportAdmin(BoundaryMap, admin.ModelAdmin):
    list_display = [
        "id",
        "tenant",
        "product",
        "status",
        "granularity",
        "start",
        "end",
        "created_at",
        "finished_at",
        "duration",
    ]
    list_filter = ["status", "product", "granularity", "tenant"]
    search_fields = ["id", "tenant__name", "area_name"]
    # What was ordered and released is history: actions change a report, its form does not.
    exclude = REPORT_SHAPES
    readonly_fields = ["boundary"] + [field.name for field in Report._meta.fields if field.name not in REPORT_SHAPES]
    actions = ["rerun_failed", "cancel"]

    @admin.display(description="took")
    def duration(self, report: Report) -> str:
        if report.started_at and report.finished_at:
            return f"{(report.finished_at - report.started_at).total_seconds():.1f} s"
        return "-"

    @admin.action(description="Run the selected failed reports again")
    def rerun_failed(self, request, queryset):
        rerun = sum(services.report_rerun(report=report) for report in queryset)
        self.message_user(request, f"{rerun} failed report(s) queued again; others were left as they were")

    @admin.action(description="Cancel the selected queued or running reports")
    def cancel(self, request, queryset):
        cancelled = 0
        for report in queryset.exclude(status__in=Report.FINAL_STATUSES):
            try:
                services.report_cancel(report=report)
                cancelled += 1
            except ServiceError:
                pass  # it finished meanwhile
        self.message_user(request, f"{cancelled} report(s) cancelled")


@admin.register(Release)
class ReleaseAdmin(BoundaryMap, ReadOnlyAdmin):
    """The release log: read-only here, and the database refuses changes and deletions."""

    list_display = ["released_at", "tenant", "product", "ordered_by_key", "start", "end", "dataset_version"]
    list_filter = ["product", "tenant"]
    search_fields = ["tenant__name", "report__id", "result_sha256"]
    exclude = ["geometry"]
    readonly_fields = ["boundary"] + [field.name for field in Release._meta.fields if field.name != "geometry"]
    date_hierarchy = "released_at"


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    """Who did what; read-only here, and the database refuses changes and deletions."""

    list_display = ["at", "tenant", "actor", "action", "target"]
    list_filter = ["action", "tenant"]
    search_fields = ["tenant__name", "target", "actor__prefix"]
    date_hierarchy = "at"
    readonly_fields = [field.name for field in AuditEvent._meta.fields]


class LicensedRegionForm(forms.ModelForm):
    """A region's boundary from a GeoJSON file (as a city sends it) or pasted GeoJSON or WKT."""

    geometry = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "cols": 80}),
        required=False,
        label="Boundary",
        help_text="GeoJSON or WKT in longitude/latitude (EPSG:4326): a Polygon or MultiPolygon",
    )
    boundary_file = forms.FileField(
        required=False, help_text="or a GeoJSON file: a geometry, a Feature or a FeatureCollection (its first)"
    )

    class Meta:
        model = LicensedRegion
        fields = ["name", "geometry", "boundary_file", "valid_from", "valid_until"]

    def clean(self):
        data = super().clean()
        upload = data.get("boundary_file")
        text = upload.read().decode("utf-8", errors="replace") if upload else data.get("geometry") or ""
        if not text.strip():
            raise forms.ValidationError("give the boundary: a GeoJSON file, or GeoJSON or WKT text")
        try:
            data["geometry"] = boundary_from_text(text)
        except ValueError as exc:
            raise forms.ValidationError({"boundary_file" if upload else "geometry": str(exc)}) from None
        return data


@admin.register(LicensedRegion)
class LicensedRegionAdmin(BoundaryMap, GuardedModelAdmin):
    """Where tenants may order; grant a region to a tenant's group under "Object permissions"."""

    form = LicensedRegionForm
    list_display = ["name", "valid_from", "valid_until", "created_at"]
    search_fields = ["name"]
    readonly_fields = ["boundary"]
