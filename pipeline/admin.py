"""The opt-out registry in the admin, read-only: statuses change only through the subscriber's
page, and the log is append-only."""

from django.contrib import admin

from insights.admin import ReadOnlyAdmin
from pipeline.models import OptOutChange, OptOutStatus


@admin.register(OptOutStatus)
class OptOutStatusAdmin(ReadOnlyAdmin):
    list_display = ["number_hash", "opted_out", "changed_at"]
    list_filter = ["opted_out"]
    search_fields = ["number_hash"]


@admin.register(OptOutChange)
class OptOutChangeAdmin(ReadOnlyAdmin):
    list_display = ["changed_at", "number_hash", "opted_out"]
    list_filter = ["opted_out"]
    search_fields = ["number_hash"]
    date_hierarchy = "changed_at"
