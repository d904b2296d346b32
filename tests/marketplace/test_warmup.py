"""After a release, the areas buyers re-order are computed into the node's shared months
(marketplace/services/warmup.py): a buyer's re-order of such an area, moved on to the new
data, reads none of its months from PostgreSQL, even on a worker that never read it; nothing
is billed or stored for the warm-up; it warms only rolling orders, the most ordered first,
within its limits; and a broker or Redis that is down leaves the load and the reports as they are."""

import dataclasses
import datetime as dt
import logging
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
import redis
from django.contrib.gis.geos import MultiPolygon

from billing.models import UsageLine
from insights import shared
from insights.models import Release
from insights.products import PRODUCTS
from insights.reports import Query
from insights.sums import caches_clear
from marketplace.models import Report
from marketplace.services import product_grant, warmup
from tests import grid
from tests.conftest import CITY_CELLS, CITY_END, city_visits
from tests.factories import compare_product, five_day_order_body, footfall_product
from tests.shared_months import own_prefix, reads_counted  # noqa: F401 (own_prefix: an autouse fixture)

REPORTS = "/api/v1/reports/"
BERLIN = ZoneInfo("Europe/Berlin")
UTC = dt.UTC
NEXT_WEEK_END = CITY_END + dt.timedelta(days=7)
# The morning after the test city's week: orders of its last days are rolling ones. The
# warm-up runs a week later (the city's data is of spring 2026).
ORDERED = dt.datetime(2026, 4, 1, 7, tzinfo=UTC)


@pytest.fixture(autouse=True)
def a_week_after_the_orders(monkeypatch):
    monkeypatch.setattr(warmup, "timezone", SimpleNamespace(now=lambda: ORDERED + dt.timedelta(days=7)))


@pytest.fixture
def place(api, django_capture_on_commit_callbacks):
    """POST an order and run it (eagerly): its report as the API shows it."""

    def post(body, *, ordered=ORDERED):
        with django_capture_on_commit_callbacks(execute=True):
            response = api.post(REPORTS, body, format="json")
        assert response.status_code == 201, response.json()
        Report.objects.filter(pk=response.json()["id"]).update(created_at=ordered)
        return api.get(f"{REPORTS}{response.json()['id']}/").json()

    return post


def next_week(tmp_path, django_capture_on_commit_callbacks) -> Release:
    """The operator's next weekly file, loaded; its release's warm-up run (eagerly) once committed."""
    with django_capture_on_commit_callbacks(execute=True):
        grid.load_totals(tmp_path / "next.csv", cells=CITY_CELLS, start=CITY_END, end=NEXT_WEEK_END, visits=city_visits)
    return Release.objects.latest("pk")


def spied(monkeypatch, compute, product: str = "footfall") -> None:
    """The warm-up computes the product with `compute`."""
    monkeypatch.setitem(warmup.PRODUCTS, product, dataclasses.replace(PRODUCTS[product], compute=compute))


def moved_on_a_week(body: dict) -> dict:
    return body | {"start": "2026-04-03T00:00:00+02:00", "end": "2026-04-08T00:00:00+02:00"}


@pytest.mark.parametrize("areas_warmed", [50, 0])
def test_a_reorder_after_a_release_reads_no_month_from_the_database(
    city, place, tmp_path, django_capture_on_commit_callbacks, settings, monkeypatch, areas_warmed
):
    settings.REPORT_WARMUP_AREAS = areas_warmed
    body = five_day_order_body(granularity="hour")
    assert place(body)["status"] == "succeeded"
    usage_lines = UsageLine.objects.count()

    next_week(tmp_path, django_capture_on_commit_callbacks)
    assert (Report.objects.count(), UsageLine.objects.count()) == (1, usage_lines)  # nothing ordered or billed

    fetched = reads_counted(monkeypatch)
    caches_clear()  # another worker, which never read the area
    again = place(moved_on_a_week(body))
    assert again["status"] == "succeeded"
    assert len(again["result"]["series"]) == 5 * 24
    if areas_warmed:
        assert fetched == []
    else:
        assert fetched  # the months the new release changed are read from PostgreSQL


def a_day_passes(settings) -> None:
    """What a worker shared (a day's life, SHARED_MONTHS_TTL_SECONDS) expires; what the warm-up
    kept longer is left."""
    shared.flush()
    client = redis.Redis.from_url(settings.SHARED_MONTHS_URL)
    for name in client.scan_iter(match=f"{settings.SHARED_MONTHS_PREFIX}:*"):
        if b":written" not in name and client.ttl(name) <= settings.SHARED_MONTHS_TTL_SECONDS:
            client.delete(name)


@pytest.mark.parametrize(("kept_seconds", "reads_the_database"), [(8 * 24 * 3600, False), (3600, True)])
@pytest.mark.parametrize("first", ["the warm-up", "a buyer"])
def test_a_reorder_later_in_the_week_still_reads_nothing_from_the_database(
    city,
    place,
    tmp_path,
    django_capture_on_commit_callbacks,
    settings,
    monkeypatch,
    kept_seconds,
    reads_the_database,
    first,
):
    """What the warm-up writes, and what it finds shared (a buyer's re-order came first, on the
    worker that then warms), outlives a worker's entries: a re-order later in the week, on
    another worker, reads nothing from the database."""
    settings.REPORT_WARMUP_TTL_SECONDS = kept_seconds
    body = five_day_order_body(granularity="hour")
    place(body)
    if first == "a buyer":
        settings.REPORT_WARMUP_AREAS = 0
    release = next_week(tmp_path, django_capture_on_commit_callbacks)
    if first == "a buyer":
        place(moved_on_a_week(body))  # this worker now holds the area and its months, the node for a day
        shared.flush()
        settings.REPORT_WARMUP_AREAS = 50
        assert warmup.ordered_areas_warm(release_id=release.pk) == 1
    a_day_passes(settings)

    fetched = reads_counted(monkeypatch)
    caches_clear()  # another worker
    assert place(moved_on_a_week(body))["status"] == "succeeded"
    assert bool(fetched) == reads_the_database


def test_the_warm_up_computes_the_same_numbers_the_reorder_shows(
    city, place, tmp_path, django_capture_on_commit_callbacks, settings
):
    body = five_day_order_body()
    place(body)
    next_week(tmp_path, django_capture_on_commit_callbacks)
    warmed = place(moved_on_a_week(body))["result"]["series"]

    settings.SHARED_MONTHS_URL = ""  # a node that shares nothing
    caches_clear()
    unwarmed = place(moved_on_a_week(body))["result"]["series"]
    assert warmed == unwarmed
    days = [dt.date(2026, 4, 3) + dt.timedelta(days=day) for day in range(5)]
    assert [row["person_hours"] for row in warmed] == [
        sum(
            city_visits(cell, hour)
            for cell in CITY_CELLS
            for hour in grid.hours(CITY_END, NEXT_WEEK_END)
            if hour.astimezone(BERLIN).date() == day
        )
        for day in days
    ]


def test_the_most_ordered_areas_are_warmed_first_and_no_more_than_the_limit(
    city, place, tmp_path, django_capture_on_commit_callbacks, settings, monkeypatch
):
    often = five_day_order_body()
    once = five_day_order_body(geometry=grid.geojson(grid.square(0, 0, 2, 2)))
    place(often, ordered=ORDERED)
    place(often, ordered=ORDERED + dt.timedelta(hours=1))
    place(once, ordered=ORDERED + dt.timedelta(hours=2))  # the latest, but ordered once
    settings.REPORT_WARMUP_AREAS = 1
    warmed = []
    compute = PRODUCTS["footfall"].compute
    spied(monkeypatch, lambda query, **kwargs: warmed.append(query) or compute(query, **kwargs))

    next_week(tmp_path, django_capture_on_commit_callbacks)

    (query,) = warmed
    assert query.geometry.equals(MultiPolygon(grid.square(0, 0, 4, 4), srid=4326))
    # The latest of those orders, moved on a week: the same local days of the week, at local midnight.
    assert (query.start, query.end) == (
        dt.datetime(2026, 4, 3, tzinfo=BERLIN).astimezone(UTC),
        dt.datetime(2026, 4, 8, tzinfo=BERLIN).astimezone(UTC),
    )


def test_an_area_that_fails_leaves_the_others_to_warm(
    city, place, tmp_path, django_capture_on_commit_callbacks, monkeypatch, caplog
):
    small = MultiPolygon(grid.square(0, 0, 2, 2), srid=4326)
    place(five_day_order_body())
    place(five_day_order_body(geometry=grid.geojson(small[0])), ordered=ORDERED + dt.timedelta(hours=1))  # first
    compute, calls = PRODUCTS["footfall"].compute, []

    def small_fails(query, **kwargs):
        calls.append(query.geometry)
        if query.geometry.equals(small):
            raise RuntimeError("an area the engine refuses now")
        return compute(query, **kwargs)

    spied(monkeypatch, small_fails)
    with caplog.at_level(logging.WARNING, logger="marketplace.services.warmup"):
        release = next_week(tmp_path, django_capture_on_commit_callbacks)
    assert [geometry.equals(small) for geometry in calls] == [True, False]  # the other one after it
    assert "area failed" in caplog.text
    assert warmup.ordered_areas_warm(release_id=release.pk) == 1


def test_only_rolling_orders_are_warmed(city, place, tmp_path, django_capture_on_commit_callbacks, monkeypatch):
    place(five_day_order_body(), ordered=ORDERED + dt.timedelta(days=15))  # a past period, ordered later
    warmed = []
    spied(monkeypatch, lambda query, **kwargs: warmed.append(query))
    next_week(tmp_path, django_capture_on_commit_callbacks)
    assert warmed == []


def test_with_redis_down_the_warm_up_stops(
    city, place, tmp_path, django_capture_on_commit_callbacks, settings, monkeypatch
):
    place(five_day_order_body())
    place(five_day_order_body(geometry=grid.geojson(grid.square(0, 0, 2, 2))))
    settings.SHARED_MONTHS_URL = "redis://127.0.0.1:9/0"  # nothing listens there
    compute, warmed = PRODUCTS["footfall"].compute, []
    spied(monkeypatch, lambda query, **kwargs: warmed.append(query) or compute(query, **kwargs))
    next_week(tmp_path, django_capture_on_commit_callbacks)
    assert len(warmed) == 1  # the first finds Redis down; the rest are not computed for nothing


def test_a_compare_order_is_warmed_with_both_periods_moved_on(
    city, tenant, place, tmp_path, django_capture_on_commit_callbacks, monkeypatch
):
    product_grant(tenant=tenant, product=compare_product())
    place(
        five_day_order_body(
            product="compare",
            start="2026-03-30T00:00:00+02:00",
            compare_start="2026-03-27T00:00:00+01:00",
            compare_end="2026-03-29T00:00:00+01:00",
        )
    )
    warmed = []
    compute = PRODUCTS["compare"].compute
    spied(monkeypatch, lambda query, **kwargs: warmed.append(query) or compute(query, **kwargs), product="compare")
    next_week(tmp_path, django_capture_on_commit_callbacks)
    (query,) = warmed
    local = [
        moment.astimezone(BERLIN) for moment in (query.start, query.end, query.comparison_start, query.comparison_end)
    ]
    assert local == [
        dt.datetime(2026, 4, 6, tzinfo=BERLIN),
        dt.datetime(2026, 4, 8, tzinfo=BERLIN),
        dt.datetime(2026, 4, 3, tzinfo=BERLIN),
        dt.datetime(2026, 4, 5, tzinfo=BERLIN),
    ]


def test_an_earlier_release_leaves_the_warm_up_to_the_latest(city, place, tmp_path, django_capture_on_commit_callbacks):
    place(five_day_order_body())
    first = Release.objects.earliest("pk")
    latest = next_week(tmp_path, django_capture_on_commit_callbacks)
    assert warmup.ordered_areas_warm(release_id=first.pk) == 0
    assert warmup.ordered_areas_warm(release_id=latest.pk) == 1
    assert warmup.ordered_areas_warm(release_id=latest.pk + 1000) == 0  # gone


def test_the_warm_up_is_queued_only_once_the_load_commits(
    city, tmp_path, django_capture_on_commit_callbacks, monkeypatch
):
    queued = []
    monkeypatch.setattr("marketplace.tasks.warm_ordered_areas.apply_async", lambda args, **kwargs: queued.extend(args))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        grid.load_totals(tmp_path / "next.csv", cells=CITY_CELLS, start=CITY_END, end=NEXT_WEEK_END, visits=city_visits)
    assert queued == []
    for callback in callbacks:
        callback()
    assert queued == [Release.objects.latest("pk").pk]


def test_a_broker_down_leaves_the_load_as_it_is(
    city, tmp_path, django_capture_on_commit_callbacks, monkeypatch, caplog
):
    def down(*args, **kwargs):
        raise ConnectionRefusedError("the broker is down")

    monkeypatch.setattr("marketplace.tasks.warm_ordered_areas.apply_async", down)
    releases = Release.objects.count()
    with caplog.at_level(logging.WARNING, logger="marketplace.services.warmup"):
        next_week(tmp_path, django_capture_on_commit_callbacks)
    assert Release.objects.count() == releases + 1
    assert "could not queue the warm-up" in caplog.text


def test_moving_on_keeps_local_midnight_across_a_change_of_time():
    query = Query(  # the week of the spring change: 167 hours
        start=dt.datetime(2026, 3, 23, tzinfo=BERLIN).astimezone(UTC),
        end=dt.datetime(2026, 3, 30, tzinfo=BERLIN).astimezone(UTC),
        granularity="day",
        time_zone="Europe/Berlin",
        version=1,
        policy=None,
    )
    newest = dt.datetime(2026, 4, 13, tzinfo=BERLIN).astimezone(UTC)
    moved = warmup.moved_on(query, newest)
    assert (moved.start, moved.end) == (
        dt.datetime(2026, 4, 6, tzinfo=BERLIN).astimezone(UTC),
        dt.datetime(2026, 4, 13, tzinfo=BERLIN).astimezone(UTC),
    )
    assert warmup.moved_on(query, query.end + dt.timedelta(days=6)) == query  # no whole week fits: as ordered


@pytest.mark.parametrize("off", [{"REPORT_WARMUP_AREAS": 0}, {"SHARED_MONTHS_URL": ""}])
def test_with_the_warm_up_off_a_load_queues_nothing(
    city, tmp_path, django_capture_on_commit_callbacks, settings, monkeypatch, off
):
    for name, value in off.items():
        setattr(settings, name, value)
    queued = []
    monkeypatch.setattr("marketplace.tasks.warm_ordered_areas.apply_async", lambda args, **kwargs: queued.extend(args))
    next_week(tmp_path, django_capture_on_commit_callbacks)
    assert queued == []


def test_a_week_across_a_change_of_time_is_the_same_order_as_any_other_week(db):
    def week(monday: dt.date) -> Report:
        start = dt.datetime.combine(monday, dt.time(), tzinfo=BERLIN)
        return Report(
            product=footfall_product(),
            geometry=MultiPolygon(grid.square(0, 0, 4, 4), srid=4326),
            start=start.astimezone(UTC),
            end=(start + dt.timedelta(days=7)).astimezone(UTC),  # wall-clock: the next Monday's midnight
            granularity="day",
            time_zone="Europe/Berlin",
            breakdowns=[],
        )

    assert warmup._order_key(week(dt.date(2026, 3, 23))) == warmup._order_key(week(dt.date(2026, 3, 16)))
