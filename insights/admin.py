from django.contrib import admin

from insights.boundaries import boundary_svg
from insights.models import DatasetVersion, Region, Release, ReleasePolicy


@admin.register(DatasetVersion)
class DatasetVersionAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "kind",
        "source",
        "rows",
        "cells",
        "period_start",
        "period_end",
        "loaded_at",
        "duration_seconds",
    ]
    list_filter = ["kind"]

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # dataset versions are immutable


@admin.register(Region)
class RegionAdmin(admin.ModelAdmin):
    """Home regions and zones, loaded with load_regions; their boundaries drawn."""

    exclude = ["geometry"]
    readonly_fields = ["boundary"]

    @admin.display(description="drawn to scale")
    def boundary(self, region: Region) -> str:
        return boundary_svg(region.geometry)

    list_display = ["code", "name"]
    search_fields = ["code", "name"]
    ordering = ["code"]


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records kept as they were written (releases, logs, mirrors of Stripe): looked at, never
    changed here. The one read-only base of every app's admin: insights is the app all others use."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


# Releases and their policies are decided once, by the loader and build_releases.
@admin.register(ReleasePolicy)
class ReleasePolicyAdmin(ReadOnlyAdmin):
    list_display = ["id", "k", "round_to", "noise_scale", "noise_key", "created_at"]


@admin.register(Release)
class ReleaseAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "dataset_version",
        "policy",
        "values",
        "released",
        "withheld_below_k",
        "withheld_complementary",
        "total_exact",
        "total_released",
        "built_at",
        "duration_seconds",
    ]
    list_filter = ["policy", "dataset_version__kind"]
