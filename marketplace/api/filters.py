"""Query-string filters of the API's lists."""

import datetime as dt

import django_filters

from marketplace.api.bounds import SupportedIsoDateTimeFormField
from marketplace.models import Report


class UTCIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    """Compares in UTC: PostgreSQL refuses offsets beyond ±15:59 that ISO 8601 allows. Refuses
    dates outside the supported years, which overflow in that shift."""

    field_class = SupportedIsoDateTimeFormField

    def filter(self, qs, value):
        return super().filter(qs, value.astimezone(dt.UTC) if value else value)


class ReportFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=Report.Status.choices)
    product = django_filters.CharFilter(field_name="product__code")
    area = django_filters.UUIDFilter(field_name="area_id")
    created_after = UTCIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UTCIsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Report
        fields = ["status", "product", "area", "created_after", "created_before"]
