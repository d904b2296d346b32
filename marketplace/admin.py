from django.contrib import admin
from django.contrib.gis.admin import GISModelAdmin
from guardian.admin import GuardedModelAdmin

from marketplace.models import (
    ApiKey,
    Area,
    AuditEvent,
    LicensedRegion,
    Membership,
    Product,
    Release,
    Report,
    Tenant,
)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0


class ApiKeyInline(admin.TabularInline):
    model = ApiKey
    extra = 0
    fields = ["name", "prefix", "role", "created_at", "last_used_at", "expires_at", "revoked_at"]
    readonly_fields = ["prefix", "created_at", "last_used_at"]
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False  # keys are created with create_api_key, which shows the secret once


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "time_zone", "created_at"]
    list_filter = ["kind"]
    search_fields = ["name"]
    inlines = [MembershipInline, ApiKeyInline]


@admin.register(Product)
class ProductAdmin(GuardedModelAdmin):
    list_display = ["code", "name", "is_active", "privacy_k", "privacy_round_to", "privacy_min_area_km2"]
    fieldsets = [
        (None, {"fields": ["code", "name", "description", "breakdowns", "is_active"]}),
        (
            "Privacy guard (empty: the service-wide default, see docs/privacy.md)",
            {
                "fields": [
                    "privacy_k",
                    "privacy_round_to",
                    "privacy_min_area_km2",
                    "privacy_min_cells",
                    "privacy_noise_scale",
                    "privacy_query_budget",
                ]
            },
        ),
    ]


@admin.register(Area)
class AreaAdmin(GISModelAdmin):
    list_display = ["name", "tenant", "area_km2", "cell_count", "created_at"]
    list_filter = ["tenant"]
    search_fields = ["name", "tenant__name"]
    readonly_fields = ["area_km2", "cell_count"]


@admin.register(Report)
class ReportAdmin(GISModelAdmin):
    list_display = ["id", "tenant", "product", "status", "granularity", "start", "end", "created_at", "finished_at"]
    list_filter = ["status", "product", "granularity", "tenant"]
    search_fields = ["id", "tenant__name", "area_name"]
    readonly_fields = [field.name for field in Report._meta.fields if field.name != "geometry"]


@admin.register(Release)
class ReleaseAdmin(GISModelAdmin):
    """The release log: read-only here, and the database refuses changes and deletions."""

    list_display = ["released_at", "tenant", "product", "ordered_by_key", "start", "end", "dataset_version"]
    list_filter = ["product", "tenant"]
    search_fields = ["tenant__name", "report__id", "result_sha256"]
    readonly_fields = [field.name for field in Release._meta.fields if field.name != "geometry"]
    date_hierarchy = "released_at"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Who did what; read-only here, and the database refuses changes and deletions."""

    list_display = ["at", "tenant", "actor", "action", "target"]
    list_filter = ["action", "tenant"]
    search_fields = ["tenant__name", "target", "actor__prefix"]
    date_hierarchy = "at"
    readonly_fields = [field.name for field in AuditEvent._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(LicensedRegion)
class LicensedRegionAdmin(GuardedModelAdmin, GISModelAdmin):
    """Where tenants may order; grant a region to a tenant's group under "Object permissions"."""

    list_display = ["name", "valid_from", "valid_until", "created_at"]
    search_fields = ["name"]
