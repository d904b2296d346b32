from django.contrib import admin

from insights.boundaries import boundary_svg
from insights.models import DatasetVersion, Region


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
