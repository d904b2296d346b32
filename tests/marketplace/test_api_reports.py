import datetime as dt
from collections import defaultdict
from zoneinfo import ZoneInfo

import pytest

from insights.releases import releases_build
from insights.selectors import current_release_policy
from marketplace import tasks
from marketplace.api.serializers import ReportInput, ReportOutput
from marketplace.models import Product, Report, Role
from tests import grid
from tests.downloads import as_json as json_of
from tests.errors import assert_error
from tests.factories import TenantFactory, five_day_order_body, granted_tenant, order_body
from tests.marketplace.released import by_local_day, published_presence

BERLIN = ZoneInfo("Europe/Berlin")
REPORTS = "/api/v1/reports/"


@pytest.fixture
def place(api, django_capture_on_commit_callbacks):
    """POST an order and run what it queued (the task, eagerly)."""

    def post(body, client=None, **headers):
        with django_capture_on_commit_callbacks(execute=True):
            return (client or api).post(REPORTS, body, format="json", **headers)

    return post


def test_an_order_is_computed_and_downloadable_as_json_and_csv(api, city, place):
    response = place(five_day_order_body(name="Block"))

    assert response.status_code == 201
    assert response.json()["status"] == "queued"
    report = api.get(f"{REPORTS}{response.json()['id']}/").json()
    days = defaultdict(int)
    for (_, hour), visits in city.items():
        days[hour.astimezone(BERLIN).date()] += visits
    assert report["status"] == "succeeded"
    assert (report["progress"], report["area_name"], report["cell_count"]) == (1.0, "Block", 16)
    assert report["area_km2"] == pytest.approx(1.0, rel=1e-6)
    # Every hourly value of the test city is at or above k: all published, unrounded here.
    series = report["result"]["series"]
    assert [row["person_hours"] for row in series] == [days[day] for day in sorted(days)]
    assert [row["visits"] for row in series] == [row["person_hours"] for row in series]  # the deprecated name
    assert [row["hours"] for row in series] == [24, 24, 23, 24, 24]
    assert [row["average_present"] for row in series] == [
        round(days[day] / hours, 1) for day, hours in zip(sorted(days), [24, 24, 23, 24, 24], strict=True)
    ]
    assert {(row["released_share"], row["suppressed"], row["suppressed_reason"]) for row in series} == {
        (1.0, False, None)
    }
    assert report["result"]["sources"] == [
        {
            "dataset_version": report["dataset_version"],
            "period_start": "2026-03-26T23:00:00+00:00",
            "period_end": "2026-03-31T22:00:00+00:00",
            "manifest": {},
        }
    ]
    assert report["result"]["privacy"] == {
        "release_policy": current_release_policy().pk,
        "k": 10,
        "round_to": 1,
        "noise": False,
        "cell_hours": 16 * 119,
        "cell_hours_released": 16 * 119,
        "released_share": 1.0,
        "breakdown_values": 0,
        "breakdown_values_released": 0,
        "suppressed_values": 0,
    }

    as_json = api.get(f"{REPORTS}{report['id']}/result.json")
    assert as_json.status_code == 200 and json_of(as_json) == report["result"]
    as_csv = api.get(f"{REPORTS}{report['id']}/result.csv")
    assert as_csv["Content-Type"] == "text/csv; charset=utf-8"
    lines = b"".join(as_csv.streaming_content).decode().splitlines()
    assert lines[0] == (
        "start,end,hours,age_band,gender,person_hours,visits,average_present,released_share,suppressed,suppressed_reason"
    )
    dst_day = days[dt.date(2026, 3, 29)]
    assert lines[3] == (
        f"2026-03-29T00:00:00+01:00,2026-03-30T00:00:00+02:00,23,*,*,{dst_day},{dst_day},{round(dst_day / 23, 1)},"
        "1.0,false,"
    )
    assert len(lines) == 6


def test_an_order_over_a_saved_area_snapshots_it(api, city, place):
    area = api.post(
        "/api/v1/areas/", {"name": "West", "geometry": grid.geojson(grid.square(0, 0, 2, 2))}, format="json"
    ).json()

    response = place(five_day_order_body(area=area["id"], geometry=None))

    assert response.status_code == 201
    assert (response.json()["area"], response.json()["area_name"], response.json()["cell_count"]) == (
        area["id"],
        "West",
        4,
    )
    api.delete(f"/api/v1/areas/{area['id']}/")
    kept = api.get(f"{REPORTS}{response.json()['id']}/").json()
    assert (kept["area"], kept["area_name"], kept["status"]) == (None, "West", "succeeded")


def test_times_without_an_offset_are_read_in_the_tenants_time_zone(api, city, place):
    response = place(order_body(start="2026-03-27T00:00:00", end="2026-03-30T00:00:00"))

    assert response.status_code == 201
    report = Report.objects.get()
    assert report.start == dt.datetime(2026, 3, 27, tzinfo=BERLIN)
    assert report.end == dt.datetime(2026, 3, 30, tzinfo=BERLIN)


@pytest.mark.parametrize(
    "overrides, status, code, attr",
    [
        ({"end": "2026-03-27T00:00:00+01:00"}, 400, "end_not_after_start", "end"),
        ({"start": "2026-03-28T00:00:00+01:00", "end": "2026-03-27T00:00:00+01:00"}, 400, "end_not_after_start", "end"),
        ({"start": "2026-03-20T00:00:00+01:00"}, 400, "outside_loaded_data", "start"),
        ({"end": "2026-04-03T00:00:00+02:00"}, 400, "outside_loaded_data", "end"),
        ({"granularity": "minute"}, 400, "invalid_choice", "granularity"),
        ({"product": "weather"}, 400, "unknown_product", "product"),
        ({"start": "2026-03-27T05:00:00+01:00"}, 400, "not_on_bucket_boundary", "start"),
        ({"start": "2026-03-29T02:30:00"}, 400, "not_on_bucket_boundary", "start"),  # a local time DST skips
        ({"start": "not a date"}, 400, "invalid", "start"),
        ({"geometry": {"type": "Point", "coordinates": [12.3, 51.3]}}, 400, "invalid_geometry_type", "geometry"),
        ({"geometry": grid.geojson(grid.square(3, 3, 2, 2))}, 400, "outside_coverage", "geometry"),
        ({"geometry": grid.geojson(grid.square(0, 0, 1, 1))}, 400, "area_too_small", "geometry"),
        ({"area": "8a3c9a52-0e55-4a46-b2cf-3f0f5fb1a4b1"}, 400, "area_or_geometry", None),
    ],
)
def test_a_bad_order_is_refused_and_nothing_is_stored(city, place, overrides, status, code, attr):
    assert_error(place(five_day_order_body(**overrides)), status, code, attr=attr)
    assert Report.objects.count() == 0


def test_an_order_without_area_or_geometry_is_refused(city, place):
    body = five_day_order_body(geometry=None)

    assert_error(place(body), 400, "area_or_geometry")
    assert Report.objects.count() == 0


def test_malformed_json_is_refused(api, city):
    response = api.post(REPORTS, '{"product": "footfall",', content_type="application/json")

    assert_error(response, 400, "parse_error")
    assert Report.objects.count() == 0


def test_another_tenants_area_cannot_be_ordered(api, city, place, client_for):
    stranger = client_for(granted_tenant())
    foreign = stranger.post(
        "/api/v1/areas/", {"name": "Theirs", "geometry": order_body()["geometry"]}, format="json"
    ).json()
    body = five_day_order_body(area=foreign["id"], geometry=None)

    assert_error(place(body), 400, "does_not_exist", attr="area")
    assert Report.objects.count() == 0


def test_a_product_the_tenant_is_not_granted_is_refused(city, place, client_for):
    ungranted = client_for(TenantFactory())

    assert_error(place(five_day_order_body(), client=ungranted), 403, "product_not_granted")
    assert Report.objects.count() == 0


def test_a_viewer_cannot_order(city, place, tenant, client_for):
    assert_error(place(five_day_order_body(), client=client_for(tenant, Role.VIEWER)), 403, "permission_denied")
    assert Report.objects.count() == 0


def test_an_order_before_any_data_is_loaded_is_refused(db, place):
    assert_error(place(five_day_order_body()), 400, "no_data", attr="start")
    assert Report.objects.count() == 0


def test_the_same_idempotency_key_and_body_return_the_first_report(city, place):
    first = place(five_day_order_body(), HTTP_IDEMPOTENCY_KEY="order-1")
    again = place(five_day_order_body(), HTTP_IDEMPOTENCY_KEY="order-1")

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert Report.objects.count() == 1
    assert Report.objects.get().attempts == 1


def test_the_same_idempotency_key_with_another_body_is_refused(city, place):
    place(five_day_order_body(), HTTP_IDEMPOTENCY_KEY="order-1")

    response = place(five_day_order_body(granularity="hour"), HTTP_IDEMPOTENCY_KEY="order-1")

    assert_error(response, 422, "idempotency_key_reused")
    assert Report.objects.count() == 1


def test_an_overlong_idempotency_key_is_refused(city, place):
    response = place(five_day_order_body(), HTTP_IDEMPOTENCY_KEY="k" * 256)

    assert_error(response, 400, "invalid_idempotency_key")
    assert Report.objects.count() == 0


def test_idempotency_keys_are_per_tenant(city, place, client_for):
    place(five_day_order_body(), HTTP_IDEMPOTENCY_KEY="order-1")

    other = place(five_day_order_body(), client=client_for(granted_tenant()), HTTP_IDEMPOTENCY_KEY="order-1")

    assert other.status_code == 201
    assert Report.objects.count() == 2


def test_an_offset_postgresql_cannot_store_is_taken_as_its_instant(city, place):
    # ISO 8601 allows -19:00; PostgreSQL's limit is ±15:59.
    response = place(order_body(granularity="hour", start="2026-03-27T04:00:00-19:00", end="2026-03-28T04:00:00+01:00"))

    assert response.status_code == 201, response.content
    assert Report.objects.get().start == dt.datetime(2026, 3, 27, 23, tzinfo=dt.UTC)


def test_the_list_filters_by_creation_time_whatever_the_offset(api, city, place):
    place(five_day_order_body())

    assert api.get(REPORTS, {"created_after": "2000-01-01T00:00:00-19:39"}).json()["count"] == 1
    assert api.get(REPORTS, {"created_before": "2000-01-01T00:00:00-19:39"}).json()["count"] == 0


def test_the_list_shows_only_own_reports_and_filters_them(api, city, place, client_for):
    place(five_day_order_body())
    with_granularity_hour = place(
        order_body(granularity="hour", start="2026-03-27T00:00:00+01:00", end="2026-03-27T06:00:00+01:00")
    )
    place(five_day_order_body(), client=client_for(granted_tenant()))
    api.post(f"{REPORTS}{with_granularity_hour.json()['id']}/cancel/")  # already succeeded: refused, stays

    listed = api.get(REPORTS).json()
    assert listed["count"] == 2
    assert "result" not in listed["results"][0]
    assert api.get(REPORTS, {"status": "succeeded"}).json()["count"] == 2
    assert api.get(REPORTS, {"status": "queued"}).json()["count"] == 0
    assert api.get(REPORTS, {"product": "footfall"}).json()["count"] == 2
    assert api.get(REPORTS, {"product": "dwell"}).json()["count"] == 0
    assert_error(api.get(REPORTS, {"status": "bogus"}), 400, "invalid_choice", attr="status")


def test_another_tenants_report_is_not_found(api, city, place, client_for):
    stranger = client_for(granted_tenant())
    theirs = place(five_day_order_body(), client=stranger).json()["id"]

    for path in (f"{REPORTS}{theirs}/", f"{REPORTS}{theirs}/result.json", f"{REPORTS}{theirs}/result.csv"):
        assert_error(api.get(path), 404, "not_found")
    assert_error(api.post(f"{REPORTS}{theirs}/cancel/"), 404, "not_found")
    assert Report.objects.get(pk=theirs).status == "succeeded"


def test_a_queued_report_has_no_result_yet_and_can_be_cancelled(api, city):
    report_id = api.post(REPORTS, five_day_order_body(), format="json").json()["id"]  # on_commit not run: stays queued

    assert_error(api.get(f"{REPORTS}{report_id}/result.csv"), 409, "report_not_succeeded")
    cancelled = api.post(f"{REPORTS}{report_id}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert_error(api.post(f"{REPORTS}{report_id}/cancel/"), 409, "report_final")


def test_an_order_is_kept_when_the_broker_is_down(api, city, place, monkeypatch):
    def broker_down(*args, **kwargs):
        raise ConnectionRefusedError("broker down")

    monkeypatch.setattr(tasks.compute_report, "apply_async", broker_down)

    response = place(five_day_order_body())

    assert response.status_code == 201
    assert Report.objects.get().status == "queued"
    assert Report.objects.get().published_at is None  # the relay sends it when the broker is back


def test_an_order_broken_down_by_age_band_returns_its_segments(api, city, place):
    response = place(five_day_order_body(breakdowns=["age_band"]))

    assert response.status_code == 201, response.content
    report = api.get(f"{REPORTS}{response.json()['id']}/").json()
    assert report["breakdowns"] == ["age_band"]
    assert report["result"]["breakdowns"] == ["age_band"]
    # The test city has totals only: no age band was published, so none is guessed.
    segments = report["result"]["segments"]
    assert len(segments) == 5 * 6
    assert {
        (row["person_hours"], row["visits"], row["released_share"], row["suppressed"], row["suppressed_reason"])
        for row in segments
    } == {(None, None, 0.0, True, "not_released")}
    privacy = report["result"]["privacy"]
    assert (privacy["breakdown_values"], privacy["breakdown_values_released"]) == (16 * 119 * 6, 0)
    assert privacy["suppressed_values"] == 5 * 6
    assert [row["suppressed"] for row in report["result"]["series"]] == [False] * 5


@pytest.mark.parametrize(
    "breakdowns, code, attr",
    [
        (["income"], "invalid_choice", "breakdowns.0"),
        (["gender", "gender"], "repeated_breakdown", "breakdowns"),
        ("gender", "not_a_list", "breakdowns"),
    ],
)
def test_a_bad_breakdown_is_refused(city, place, breakdowns, code, attr):
    assert_error(place(five_day_order_body(breakdowns=breakdowns)), 400, code, attr=attr)
    assert Report.objects.count() == 0


def test_a_breakdown_the_product_does_not_offer_is_refused(city, place):
    Product.objects.filter(code="footfall").update(breakdowns=["age_band"])

    assert_error(place(five_day_order_body(breakdowns=["gender"])), 400, "breakdown_not_offered", attr="breakdowns")
    assert Report.objects.count() == 0


def test_a_period_across_a_gap_between_loads_is_refused(api, city, place, tmp_path):
    # A second load starting two days after the city's data ends leaves a gap.
    later = dt.datetime(2026, 4, 3, 22, tzinfo=dt.UTC)
    grid.load_totals(
        tmp_path / "later.csv", cells=[(0, 0)], start=later, end=later + dt.timedelta(days=1), visits=lambda c, h: 50
    )

    across = place(order_body(end="2026-04-05T00:00:00+02:00"))
    before = place(five_day_order_body())

    assert_error(across, 400, "no_data_in_period", attr="start")
    assert "2026-04-01T00:00:00+02:00 to 2026-04-04T00:00:00+02:00" in across.json()["message"]
    assert before.status_code == 201
    assert Report.objects.count() == 1


# A redraw of the 4 x 4 block 0.2 mm inside its edges: the same cells, each edge cell a hair less.
HAIR = 0.0002 / grid.CELL  # 0.2 mm, in cells
REDRAWN_BLOCK = grid.square(HAIR, HAIR, 4 - 2 * HAIR, 4 - 2 * HAIR)


def test_a_near_identical_redraw_is_ordered_and_both_reports_sum_the_same_released_values(api, city, place, settings):
    # No differencing audit any more: the redraw is an ordinary order. With sticky noise (seeded by
    # what a value counts, never by the area), both reports are post-processing of one release.
    settings.PRIVACY_NOISE_SCALE = 3.0
    releases_build()
    published = published_presence()
    assert published != {(grid.cell_id_of(cell), hour): value for (cell, hour), value in city.items()}  # noised
    days = by_local_day(published)

    first = place(five_day_order_body(name="Block"))
    redrawn = place(five_day_order_body(name="Block, redrawn", geometry=grid.geojson(REDRAWN_BLOCK)))

    assert (first.status_code, redrawn.status_code) == (201, 201), redrawn.content
    reports = [api.get(f"{REPORTS}{response.json()['id']}/").json() for response in (first, redrawn)]
    assert [report["status"] for report in reports] == ["succeeded", "succeeded"]
    for report in reports:
        assert [row["person_hours"] for row in report["result"]["series"]] == [days[day] for day in sorted(days)]
        assert report["result"]["privacy"]["noise"] is True
        assert report["result"]["privacy"]["cell_hours_released"] == len(published)
    first_series, redrawn_series = (report["result"]["series"] for report in reports)
    assert first_series == redrawn_series


def test_each_serializer_of_an_order_or_report_binds_fields_of_its_own():
    """Their fields are built once per class and copied for each use (FieldsBuiltOnce): the
    class's stay unbound, so requests on other threads share no bound field."""
    for make in (lambda: ReportInput(data=five_day_order_body()), lambda: ReportOutput(Report())):
        first, second = make(), make()

        assert first.fields["start"] is not second.fields["start"]
        assert (first.fields["start"].parent, second.fields["start"].parent) == (first, second)
        assert {field.parent for field in type(first)._fields_built.values()} == {None}
    assert ReportInput(data=five_day_order_body()).is_valid() and not ReportInput(data={}).is_valid()
