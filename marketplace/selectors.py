"""Reads of the buyer-facing domain. Every query starts from what the caller may see."""

import json
from collections.abc import Iterator

from django.contrib.gis.db.models.functions import Area as AreaOf
from django.contrib.gis.db.models.functions import Transform
from django.db import connection
from django.db.models import QuerySet
from guardian.shortcuts import get_objects_for_group

from insights.models import Region
from insights.renderers import LIST_ARRAYS, row_arrays
from marketplace.models import Area, Product, Report, Tenant


def product_list() -> QuerySet[Product]:
    return Product.objects.filter(is_active=True)


def product_granted_list(*, tenant: Tenant) -> QuerySet[Product]:
    return get_objects_for_group(tenant.group, "marketplace.order_product", klass=product_list())


def area_list(*, tenant: Tenant) -> QuerySet[Area]:
    return Area.objects.filter(tenant=tenant)


def report_list(*, tenant: Tenant) -> QuerySet[Report]:
    return Report.objects.filter(tenant=tenant).select_related("product")


def region_list() -> QuerySet[Region]:
    """Every loaded region, with its boundary in EPSG:4326; reference data every tenant may read."""
    return Region.objects.annotate(geometry_4326=Transform("geometry", 4326), area_m2=AreaOf("geometry")).order_by(
        "code"
    )


# A result's rows, read from the stored document in the database, array after array in
# order, so that a large result is paged or streamed rather than loaded whole.
_RESULT_ROWS = """
    SELECT element.row
    FROM marketplace_report report,
         unnest(%(arrays)s::text[]) WITH ORDINALITY AS array_name(name, position),
         jsonb_array_elements(coalesce(report.result -> array_name.name, '[]'::jsonb))
            WITH ORDINALITY AS element(row, number)
    WHERE report.id = %(report)s
    ORDER BY array_name.position, element.number
"""
STREAMED_ROWS_PER_FETCH = 2000


def report_result_rows(*, report: Report, offset: int = 0, limit: int | None = None) -> list[dict]:
    """A page of the result's rows (as in its CSV)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"{_RESULT_ROWS} OFFSET %(offset)s LIMIT %(limit)s",
            {"arrays": list(row_arrays(report.product.code)), "report": report.pk, "offset": offset, "limit": limit},
        )
        return [json.loads(row) for (row,) in cursor.fetchall()]


def report_result_stream(*, report: Report, arrays: tuple[str, ...] | None = None) -> Iterator[dict]:
    """The result's rows (or the elements of the given arrays), fetched a few thousand at a
    time through a server-side cursor: memory stays bounded whatever the result's size."""
    with connection.chunked_cursor() as cursor:
        cursor.execute(_RESULT_ROWS, {"arrays": list(arrays or row_arrays(report.product.code)), "report": report.pk})
        while rows := cursor.fetchmany(STREAMED_ROWS_PER_FETCH):
            for (row,) in rows:
                yield json.loads(row)  # Django has psycopg hand jsonb over as text


def report_result_head(*, report: Report, keep: tuple[str, ...] = ()) -> tuple[dict, list[str]]:
    """The result document without its long arrays (except those in keep), and the names of
    the arrays left out that it has."""
    dropped = [name for name in LIST_ARRAYS if name not in keep]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT result - %(dropped)s::text[],"
            "       ARRAY(SELECT name FROM unnest(%(dropped)s::text[]) AS name WHERE result ? name)"
            " FROM marketplace_report WHERE id = %(report)s",
            {"dropped": dropped, "report": report.pk},
        )
        head, left_out = cursor.fetchone()
    return json.loads(head), left_out
