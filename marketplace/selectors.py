"""Reads of the buyer-facing domain. Every query starts from what the caller may see."""

import json
import threading
import time
import uuid
from collections.abc import Iterator

import pyarrow as pa
from django.conf import settings
from django.contrib.auth.models import Group
from django.contrib.gis.db.models import MultiPolygonField
from django.contrib.gis.db.models.functions import Area as AreaOf
from django.contrib.gis.db.models.functions import Transform
from django.db import connection
from django.db.models import Func, Q, QuerySet, Value
from django.utils import timezone
from guardian.shortcuts import get_objects_for_group

from billing.models import Quote
from insights import catalogue
from insights import selectors as insights_selectors
from insights.kinds import AggregateKind
from insights.models import Region
from insights.products import LIST_ARRAYS, PRODUCTS
from insights.releases import noise_key
from insights.rows import Rows, from_ipc
from marketplace import report_waits
from marketplace.joined_rows import columns, instances
from marketplace.models import (
    ApiKey,
    Area,
    LicensedRegion,
    Membership,
    Product,
    Report,
    ResultBatch,
    Role,
    Tenant,
    WebhookEndpoint,
)

# In SQL, and built from the row as the ORM's select_related would: every request authenticates,
# and building the ORM's joined query cost a quarter of a status read.
_API_KEY = f"""
    SELECT {columns(ApiKey, "key")}, {columns(Tenant, "tenant")}, {columns(Group, "grp")}
    FROM marketplace_apikey key
    JOIN marketplace_tenant tenant ON tenant.id = key.tenant_id
    JOIN auth_group grp ON grp.id = tenant.group_id
    WHERE key.prefix = %s
"""


def api_key_by_prefix(prefix: str) -> ApiKey | None:
    """The key of that prefix, with its tenant and the tenant's group."""
    with connection.cursor() as cursor:
        cursor.execute(_API_KEY, [prefix])
        row = cursor.fetchone()
    if row is None:
        return None
    api_key, tenant, group = instances(row, ApiKey, Tenant, Group)
    tenant.group = group
    api_key.tenant = tenant
    return api_key


def product_list() -> QuerySet[Product]:
    return Product.objects.filter(is_active=True)


def product_granted_list(*, tenant: Tenant) -> QuerySet[Product]:
    return get_objects_for_group(tenant.group, "marketplace.order_product", klass=product_list())


# The active product of a code with what the group holds of it (the django-guardian permission,
# globally or on that product, as get_objects_for_group decides it); in SQL:
# the ORM's annotated query cost more to build than to run, on every order and quote.
_PRODUCT_FOR_ORDER = """
    WITH permission AS (
        SELECT permission.id, permission.content_type_id
        FROM auth_permission permission JOIN django_content_type type ON type.id = permission.content_type_id
        WHERE type.app_label = 'marketplace' AND type.model = 'product' AND permission.codename = 'order_product'
    )
    SELECT product.*,
           EXISTS (SELECT 1 FROM auth_group_permissions granted, permission
                   WHERE granted.group_id = %(group)s AND granted.permission_id = permission.id) AS granted_globally,
           EXISTS (SELECT 1 FROM guardian_groupobjectpermission granted, permission
                   WHERE granted.group_id = %(group)s AND granted.permission_id = permission.id
                     AND granted.content_type_id = permission.content_type_id
                     AND granted.object_pk = product.id::text) AS granted_on_object,
           period.valid_from AS grant_valid_from, period.valid_until AS grant_valid_until
    FROM marketplace_product product
    LEFT JOIN marketplace_productgrantperiod period ON period.product_id = product.id AND period.tenant_id = %(tenant)s
    WHERE product.is_active AND product.code = %(code)s
"""


def product_for_order(*, tenant: Tenant, code: str) -> Product | None:
    """The active product of that code, in one query with what the tenant holds of it:
    `granted_globally` and `granted_on_object` (the guardian permission order_product) and its
    grant period (`grant_valid_from`, `grant_valid_until`; None: unbounded or no period)."""
    found = Product.objects.raw(_PRODUCT_FOR_ORDER, {"group": tenant.group_id, "tenant": tenant.pk, "code": code})
    return next(iter(found), None)


# The licensed regions valid at a time, of those the group holds order_in_region on (globally or
# on the region, as guardian decides): their names, and how much of the area lies outside all of
# them (in an equal-area projection); one round trip.
_LICENCE_SHORTFALL = """
    WITH permission AS (
        SELECT permission.id, permission.content_type_id
        FROM auth_permission permission JOIN django_content_type type ON type.id = permission.content_type_id
        WHERE type.app_label = 'marketplace' AND type.model = 'licensedregion'
          AND permission.codename = 'order_in_region'
    ),
    licensed AS (
        SELECT region.name, region.geometry FROM marketplace_licensedregion region, permission
        WHERE (region.valid_from IS NULL OR region.valid_from <= %(at)s)
          AND (region.valid_until IS NULL OR region.valid_until > %(at)s)
          AND (EXISTS (SELECT 1 FROM auth_group_permissions granted
                       WHERE granted.group_id = %(group)s AND granted.permission_id = permission.id)
               OR EXISTS (SELECT 1 FROM guardian_groupobjectpermission granted
                          WHERE granted.group_id = %(group)s AND granted.permission_id = permission.id
                            AND granted.content_type_id = permission.content_type_id
                            AND granted.object_pk = region.id::text))
    )
    SELECT coalesce(array_agg(name ORDER BY name), '{}'),
           ST_Area(ST_Difference(ST_Transform(ST_GeomFromEWKB(%(geometry)s), 3035),
                                 ST_Transform(ST_Union(geometry), 3035))) / 1e6
    FROM licensed
"""


def licence_shortfall(*, tenant: Tenant, geometry, at) -> tuple[list[str], float | None]:
    """The names of the regions the tenant may order in at that time, and the km² of the area
    outside them all (None when there is none)."""
    with connection.cursor() as cursor:
        cursor.execute(_LICENCE_SHORTFALL, {"at": at, "group": tenant.group_id, "geometry": bytes(geometry.ewkb)})
        names, outside_km2 = cursor.fetchone()
    return names, (outside_km2 if names else None)


# The released data's coverage, per kind, with the state of the releases and the policy
# settings it was read under.
_coverages: dict[str, tuple[tuple, insights_selectors.Coverage | None]] = {}


def coverage(*, kind: AggregateKind) -> insights_selectors.Coverage | None:
    """insights' coverage of a kind (five queries), kept per process until the data or the policy
    settings change: one query to find out, per order and per report (none within
    catalogue.one_look(), which looked already)."""
    generation = catalogue.catalogue().state + (
        settings.PRIVACY_K,
        settings.PRIVACY_ROUND_TO,
        settings.PRIVACY_NOISE_SCALE,
        noise_key(),
    )
    cached = _coverages.get(kind.name)
    if cached is not None and cached[0] == generation:
        return cached[1]
    found = insights_selectors.coverage(kind=kind)
    _coverages[kind.name] = (generation, found)
    return found


def area_list(*, tenant: Tenant) -> QuerySet[Area]:
    return Area.objects.filter(tenant=tenant)


def report_list(*, tenant: Tenant) -> QuerySet[Report]:
    return Report.objects.filter(tenant=tenant).select_related("product")


def area_visible_list(*, tenant: Tenant, role: str, api_key: ApiKey) -> QuerySet[Area]:
    """What the caller may see: the tenant's areas, or for a viewer those shared with it."""
    areas = area_list(tenant=tenant)
    return areas.filter(shares__viewer=api_key) if role == Role.VIEWER else areas


# The requests of this process that may wait on a report at once (GET reports/{id}/?wait=): the
# others are answered at once, so waiting buyers never take every thread of the web process.
_report_waits = threading.BoundedSemaphore(settings.REPORT_WAIT_SLOTS)


def report_wait_final(*, report_id, seconds: float) -> float:
    """Wait until the report is final, or `seconds` have passed: woken by its notification
    (marketplace/report_waits.py), which reads nothing; looking at the row every
    REPORT_WAIT_POLL_SECONDS, or when woken otherwise, in case one was missed. Not at all if
    REPORT_WAIT_SLOTS requests of this process wait already. Returns how long it waited."""
    if not _report_waits.acquire(blocking=False):
        return 0.0
    started = time.monotonic()
    try:
        deadline = started + seconds
        with report_waits.final_event(report_id) as woken:
            while (left := deadline - time.monotonic()) > 0:
                if woken.wait(min(settings.REPORT_WAIT_POLL_SECONDS, left)) and report_waits.notified(report_id):
                    break
                woken.clear()
                if _report_is_final(report_id):
                    break
    finally:
        _report_waits.release()
    return time.monotonic() - started


def _report_is_final(report_id) -> bool:
    # In SQL: a fraction of the ORM's cost.
    with connection.cursor() as cursor:
        cursor.execute("SELECT status FROM marketplace_report WHERE id = %s", [report_id])
        row = cursor.fetchone()
    return row is None or row[0] in Report.FINAL_STATUSES


def reports_in_progress(*, tenant: Tenant) -> tuple[int, int]:
    """The reports queued or running: the tenant's, and the service's; in one query."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FILTER (WHERE tenant_id = %s), count(*) FROM marketplace_report"
            " WHERE status IN ('queued', 'running')",
            [tenant.pk],
        )
        return cursor.fetchone()


def report_by_idempotency_key(*, tenant: Tenant, key: str) -> Report | None:
    """The tenant's report ordered with this Idempotency-Key, if any: looked for by every order
    with a key, and rarely found, so first by its id alone (a fraction of the ORM's cost)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM marketplace_report WHERE tenant_id = %s AND idempotency_key = %s", [tenant.pk, key]
        )
        row = cursor.fetchone()
    return None if row is None else Report.objects.get(pk=row[0])


# A report its reader may see (a viewer: one shared with it), with its product and quote, its
# result (read apart, when small enough to inline) and its area (which the answer does not show:
# read and parsed, it was a tenth of a status read) deferred: the status read's, in SQL, built as
# select_related builds it (the ORM's joined query cost more to build than to run, twice a read
# that waits).
_READ_DEFERRED = {Report: ("result", "geometry", "compare_geometry")}
_READABLE = """
    WHERE report.id = %(report)s AND report.tenant_id = %(tenant)s
      AND (NOT %(viewer)s OR EXISTS (SELECT 1 FROM marketplace_share share
                                     WHERE share.report_id = report.id AND share.viewer_id = %(api_key)s))
"""
_READABLE_REPORT = f"""
    SELECT {columns(Report, "report", _READ_DEFERRED[Report])}, {columns(Product, "product")},
           {columns(Quote, "quote")}
    FROM marketplace_report report
    JOIN marketplace_product product ON product.id = report.product_id
    LEFT JOIN billing_quote quote ON quote.report_id = report.id
    {_READABLE}
"""


def report_readable(*, tenant: Tenant, role: str, api_key: ApiKey, report_id) -> Report | None:
    """The report, as report_visible_list shows it, with its product and quote; None if the
    caller may not see it, or the id is no report id at all."""
    row = _readable_row(_READABLE_REPORT, tenant=tenant, role=role, api_key=api_key, report_id=report_id)
    if row is None:
        return None
    report, product, quote = instances(row, Report, Product, Quote, deferred=_READ_DEFERRED)
    report.product = product
    Report.quote.related.set_cached_value(report, quote)  # as select_related("quote") leaves it
    return report


def report_readable_status(*, tenant: Tenant, role: str, api_key: ApiKey, report_id) -> str | None:
    """The status of the report, if the caller may see it (as report_readable decides); None if
    not: all a read that waits needs to know before it waits."""
    row = _readable_row(
        "SELECT report.status FROM marketplace_report report" + _READABLE,
        tenant=tenant,
        role=role,
        api_key=api_key,
        report_id=report_id,
    )
    return None if row is None else row[0]


def _readable_row(query: str, *, tenant: Tenant, role: str, api_key: ApiKey, report_id) -> tuple | None:
    try:
        report_id = uuid.UUID(str(report_id))
    except ValueError:
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            query, {"report": report_id, "tenant": tenant.pk, "viewer": role == Role.VIEWER, "api_key": api_key.pk}
        )
        return cursor.fetchone()


def report_visible_list(*, tenant: Tenant, role: str, api_key: ApiKey) -> QuerySet[Report]:
    reports = report_list(tenant=tenant)
    return reports.filter(shares__viewer=api_key) if role == Role.VIEWER else reports


def api_key_list(*, tenant: Tenant) -> QuerySet[ApiKey]:
    return ApiKey.objects.filter(tenant=tenant).select_related("holder").order_by("-created_at")


def region_list() -> QuerySet[Region]:
    """Every loaded region, with its boundary in EPSG:4326; reference data every tenant may read."""
    return Region.objects.annotate(geometry_4326=Transform("geometry", 4326), area_m2=AreaOf("geometry")).order_by(
        "code"
    )


# A result's batches in order: by array, then by position in it. The arrays' order is the
# downloads' (a series' totals, then its segments).
_RESULT_BATCHES = """
    SELECT batch.name, batch.first_row, batch.rows, batch.data
    FROM marketplace_resultbatch batch
    WHERE batch.report_id = %(report)s AND batch.name = ANY(%(arrays)s::text[])
    ORDER BY array_position(%(arrays)s::text[], batch.name::text), batch.first_row
"""
BATCHES_PER_FETCH = 4


def report_result_tables(*, report: Report, arrays: tuple[str, ...] | None = None) -> Iterator[pa.Table]:
    """The result's rows (or the given arrays) a stored batch at a time, as columns, fetched a
    few batches at a time through a server-side cursor: memory stays bounded whatever the
    result's size."""
    names = list(arrays or PRODUCTS[report.product.code].row_arrays)
    with connection.chunked_cursor() as cursor:
        cursor.execute(_RESULT_BATCHES, {"report": report.pk, "arrays": names})
        while batches := cursor.fetchmany(BATCHES_PER_FETCH):
            for _, _, _, data in batches:
                yield from_ipc(data)


def report_result_rows(*, report: Report, offset: int = 0, limit: int | None = None) -> list[dict]:
    """A page of the result's rows (as in its CSV): only the batches it overlaps are read."""
    names = list(PRODUCTS[report.product.code].row_arrays)
    placed = []  # (position among all the rows, rows, batch id) in the downloads' order
    position = 0
    batches = ResultBatch.objects.filter(report=report, name__in=names).values_list("name", "first_row", "rows", "pk")
    for _, _, rows, pk in sorted(batches, key=lambda batch: (names.index(batch[0]), batch[1])):
        placed.append((position, rows, pk))
        position += rows
    stop = position if limit is None else min(position, offset + limit)
    wanted = [(first, pk) for first, rows, pk in placed if first < stop and first + rows > offset]
    data = dict(ResultBatch.objects.filter(pk__in=[pk for _, pk in wanted]).values_list("pk", "data"))
    page = []
    for first, pk in wanted:
        table = from_ipc(data[pk])
        skip = max(offset - first, 0)
        page += table.slice(skip, stop - first - skip).to_pylist()
    return page


def report_result_head(*, report: Report, keep: tuple[str, ...] = ()) -> tuple[dict, list[str]]:
    """The result document without its arrays of rows, except those in keep (as Rows), and
    the names of the arrays it has that were left out, in the downloads' order."""
    head = Report.objects.values_list("result", flat=True).get(pk=report.pk)
    stored = set(ResultBatch.objects.filter(report=report).values_list("name", flat=True).distinct())
    for name in keep:
        if name in stored:
            head[name] = Rows(pa.concat_tables(report_result_tables(report=report, arrays=(name,))))
    return head, [name for name in LIST_ARRAYS if name in stored and name not in keep]


# A result's document and its batches, each array's in order (the two lists in the same order).
_RESULT_DOCUMENT = """
    SELECT report.result,
           ARRAY(SELECT batch.name FROM marketplace_resultbatch batch WHERE batch.report_id = report.id
                 ORDER BY batch.first_row, batch.name),
           ARRAY(SELECT batch.data FROM marketplace_resultbatch batch WHERE batch.report_id = report.id
                 ORDER BY batch.first_row, batch.name)
    FROM marketplace_report report WHERE report.id = %s
"""


def report_result_document(*, report: Report) -> dict:
    """The whole result document, rows as dicts: for a result small enough to inline, so its
    batches are read in one query (no server-side cursor)."""
    # In SQL, in one round trip: every status read of a succeeded report asks.
    with connection.cursor() as cursor:
        cursor.execute(_RESULT_DOCUMENT, [report.pk])
        result, names, data = cursor.fetchone()
    head = json.loads(result)
    rows: dict[str, list[dict]] = {}
    for name, stream in zip(names, data, strict=True):
        rows.setdefault(name, []).extend(from_ipc(stream).to_pylist())
    return head | {name: rows[name] for name in LIST_ARRAYS if name in rows}


# The areas a tenant has ordered (both areas of a compare report), with their periods: what
# the fair-use quota counts. Failed and cancelled orders count for nothing; areas that only
# touch along an edge share no cells and do not overlap. The tenant is a bigint, as the index
# report_tenant_geometry (btree_gist) compares it: an integer would leave it to a filter, and
# the index would read every tenant's orders over the area.
_ORDERED_AREAS = """
    ordered AS (
        SELECT report.id, report.area_name AS name, report.geometry, report.start, report."end"
        FROM marketplace_report report JOIN marketplace_product product ON product.id = report.product_id
        WHERE report.tenant_id = %(tenant)s::bigint AND product.code = ANY(%(products)s)
          AND report.status IN ('queued', 'running', 'succeeded')
        UNION ALL
        SELECT report.id, report.compare_area_name, coalesce(report.compare_geometry, report.geometry),
               coalesce(report.compare_start, report.start), coalesce(report.compare_end, report."end")
        FROM marketplace_report report JOIN marketplace_product product ON product.id = report.product_id
        WHERE report.tenant_id = %(tenant)s::bigint AND product.code = ANY(%(products)s)
          AND report.status IN ('queued', 'running', 'succeeded')
          AND (report.compare_geometry IS NOT NULL OR report.compare_start IS NOT NULL)
    ),
    new AS (SELECT ST_GeomFromEWKB(%(geometry)s) AS g),
    overlapping AS (
        SELECT ordered.* FROM ordered, new
        WHERE ordered.start < %(end)s AND ordered."end" > %(start)s
          AND ST_Intersects(ordered.geometry, new.g) AND NOT ST_Touches(ordered.geometry, new.g)
    )
"""


def report_overlapping_count(*, tenant: Tenant, products: list[str], geometry, start, end) -> int:
    """The tenant's orders (each area of a compare report counted) over an overlapping area and period."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH {_ORDERED_AREAS} SELECT count(*) FROM overlapping",
            {"tenant": tenant.pk, "products": products, "geometry": bytes(geometry.ewkb), "start": start, "end": end},
        )
        return cursor.fetchone()[0]


def licensed_region_list(*, tenant: Tenant, at) -> list[LicensedRegion]:
    """The regions the tenant may order in at that time (None: at any time), without their
    boundaries (read when used): every order checks its licence, and a country's boundary is
    large to parse."""
    valid = LicensedRegion.objects.defer("geometry")
    if at is not None:
        valid = valid.filter(Q(valid_from__isnull=True) | Q(valid_from__lte=at)).filter(
            Q(valid_until__isnull=True) | Q(valid_until__gt=at)
        )
    return list(get_objects_for_group(tenant.group, "marketplace.order_in_region", klass=valid).order_by("name"))


# Display only: a boundary simplified to ~10 m (in degrees) draws the same on a map and is a
# fraction of a country's size; licence checks read the full geometry.
LICENCE_MAP_TOLERANCE_DEGREES = 1e-4


def licensed_region_map_list(*, tenant: Tenant) -> QuerySet[LicensedRegion]:
    """The regions the tenant may order in now or later, each with a simplified boundary
    (`outline`) for a map."""
    current = LicensedRegion.objects.filter(Q(valid_until__isnull=True) | Q(valid_until__gt=timezone.now()))
    outlined = current.defer("geometry").annotate(
        outline=Func(
            Func("geometry", Value(LICENCE_MAP_TOLERANCE_DEGREES), function="ST_SimplifyPreserveTopology"),
            function="ST_Multi",
            output_field=MultiPolygonField(srid=4326),
        )
    )
    return get_objects_for_group(tenant.group, "marketplace.order_in_region", klass=outlined).order_by("name")


def webhook_endpoint_list(*, tenant: Tenant) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(tenant=tenant).order_by("created_at")


def member_list(*, tenant: Tenant) -> QuerySet[Membership]:
    return Membership.objects.filter(tenant=tenant).select_related("user").order_by("user__email")
