"""The round trips to PostgreSQL of the busiest paths, pinned: an order, a quote, the report's
run and the buyer's status read. Each check reads what it needs in a query or two (the
grants, licences, price and standing in one each; the data's coverage kept per process while
it is unchanged), so a change that adds a query per check fails here. Counted as in
production: committed transactions, each BEGIN and COMMIT a round trip of its own. And the
fair-use count's plan: by indexes per tenant."""

import datetime as dt
import re

import pytest
from django.contrib.gis.geos import MultiPolygon
from django.db import connection, transaction

from insights.services import aggregates_retain
from marketplace import selectors, tasks
from marketplace.services import outbox
from tests import grid
from tests.errors import assert_error
from tests.factories import five_day_order_body

REPORTS = "/api/v1/reports/"
QUOTES = "/api/v1/quotes/"

# Before issue 14's API work: an order 40, a quote 34, a run 21, a status read 6; before its second pass:
# an order 24, a run 15; before the run's lock was taken in its claim, its usage line written with
# its sync row, its webhooks read and its lock freed in its finishing update: a run 12; before a
# run's result batches and release record were written by its finishing update, and a status
# read's result document read in one query: a run 8, a status read 4.
ORDER_QUERIES = 22  # with the outbox's claim of the compute message after the commit
QUOTE_QUERIES = 18
RUN_QUERIES = 6
SUCCEEDED_READ_QUERIES = 3


@pytest.mark.django_db(transaction=True)
def test_an_order_its_run_and_its_reading_take_a_fixed_few_queries(
    api, city, monkeypatch, django_assert_max_num_queries
):
    sent = []
    monkeypatch.setattr(outbox, "_send", lambda report_ids: sent.extend(report_ids) or len(report_ids))
    body = five_day_order_body()
    first = api.post(REPORTS, body, format="json", HTTP_IDEMPOTENCY_KEY="first")  # the process's caches fill
    assert first.status_code == 201
    tasks.compute_report.apply(args=(str(sent[-1]),))

    with django_assert_max_num_queries(QUOTE_QUERIES):
        assert api.post(QUOTES, body, format="json").status_code == 201
    with django_assert_max_num_queries(ORDER_QUERIES):
        ordered = api.post(REPORTS, body, format="json", HTTP_IDEMPOTENCY_KEY="second")
    assert ordered.status_code == 201
    with django_assert_max_num_queries(RUN_QUERIES):
        tasks.compute_report.apply(args=(str(sent[-1]),))
    with django_assert_max_num_queries(SUCCEEDED_READ_QUERIES):
        read = api.get(f"{REPORTS}{sent[-1]}/")
    assert read.json()["status"] == "succeeded"
    assert read.json()["result"]["series"]


@pytest.mark.django_db(transaction=True)
def test_the_coverage_kept_per_process_follows_the_data_at_once(api, city):
    body = five_day_order_body()
    assert api.post(QUOTES, body, format="json").status_code == 201  # kept now
    aggregates_retain(before=dt.datetime(2026, 4, 1, tzinfo=dt.UTC))  # March goes

    assert_error(api.post(QUOTES, body, format="json"), 400, "outside_loaded_data", attr="start")


@pytest.mark.django_db
def test_the_fair_use_count_reads_only_the_tenant_s_orders_over_the_area(tenant):
    """By the index of tenant and area (report_tenant_geometry), whatever other tenants ordered
    over the same shopping centre. The tenant is compared as the index's bigint: as an integer,
    the index read every tenant's orders there."""
    area = MultiPolygon(grid.square(0, 0, 4, 4), srid=4326)
    params = {
        "tenant": tenant.pk,
        "products": ["footfall", "compare"],
        "geometry": bytes(area.ewkb),
        "start": dt.datetime(2026, 3, 27, tzinfo=dt.UTC),
        "end": dt.datetime(2026, 3, 28, tzinfo=dt.UTC),
    }
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # the table is empty: plan as for a large one
        cursor.execute(f"EXPLAIN WITH {selectors._ORDERED_AREAS} SELECT count(*) FROM overlapping", params)
        plan = [line for (line,) in cursor.fetchall()]

    used = [re.search(r"(?:Scan using|Bitmap Index Scan on) (\w+)", line) for line in plan]
    by_area = next((at for at, match in enumerate(used) if match and match.group(1) == "report_tenant_geometry"), None)
    assert by_area is not None, plan
    assert (
        plan[by_area + 1].strip().startswith(f"Index Cond: ((tenant_id = '{tenant.pk}'::bigint) AND (geometry && ")
    ), plan
