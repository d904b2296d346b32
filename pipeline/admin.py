"""The opt-out registry in the admin, read-only: statuses change only through the subscriber's
page, and the log is append-only."""

from django.contrib import admin

from pipeline.models import OptOutChange, OptOutStatus


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


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
