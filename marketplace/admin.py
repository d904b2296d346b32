from django.contrib import admin
from django.contrib.gis.admin import GISModelAdmin
from guardian.admin import GuardedModelAdmin

from marketplace.models import ApiKey, Area, Membership, Product, Report, Tenant


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0


class ApiKeyInline(admin.TabularInline):
    model = ApiKey
    extra = 0
    fields = ["name", "prefix", "role", "created_at", "last_used_at", "revoked_at"]
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
    list_display = ["code", "name", "is_active"]


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
