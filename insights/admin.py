from django.contrib import admin

from insights.models import DatasetVersion


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
