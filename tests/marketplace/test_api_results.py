"""A succeeded report's result downloads as JSON, CSV, Parquet and a PNG chart."""

import datetime as dt
import json
import struct

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from rest_framework.test import APIClient

from insights.releases import releases_build
from insights.selectors import current_release_policy
from marketplace import selectors
from marketplace.models import Report
from tests import grid
from tests.downloads import as_json, content
from tests.errors import assert_error
from tests.factories import five_day_order_body, granted_tenant
from tests.marketplace.released import threshold

REPORTS = "/api/v1/reports/"
FORMATS = ["json", "csv", "parquet", "png", "geojson"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHART_FILE = "/tmp/result-chart.png"


def block_order(**overrides) -> dict:
    """The five-day order of the test block, named "Block"."""
    return five_day_order_body(**({"name": "Block"} | overrides))


@pytest.fixture
def place(api, django_capture_on_commit_callbacks):
    """POST an order and run what it queued (the task, eagerly)."""

    def post(body, client=None):
        with django_capture_on_commit_callbacks(execute=True):
            return (client or api).post(REPORTS, body, format="json")

    return post


@pytest.fixture
def succeeded(api, city, place):
    """Orders a report with the given overrides; returns it once succeeded, result included."""

    def order(**overrides) -> dict:
        report = api.get(f"{REPORTS}{place(block_order(**overrides)).json()['id']}/").json()
        assert report["status"] == "succeeded", report
        return report

    return order


def download(api, report: dict, extension: str, content_type: str):
    response = api.get(f"{REPORTS}{report['id']}/result.{extension}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == content_type
    assert response["Content-Disposition"] == f'attachment; filename="footfall-{report["id"]}.{extension}"'
    return response


COLUMNS = [
    "start",
    "end",
    "hours",
    "age_band",
    "gender",
    "person_hours",
    "visits",  # deprecated: person_hours
    "average_present",
    "released_share",
    "suppressed",
    "suppressed_reason",
]


def csv_lines(series: list[dict]) -> list[str]:
    def text(value) -> str:
        return "" if value is None else str(value)

    return [",".join(COLUMNS)] + [
        f"{row['start']},{row['end']},{row['hours']},*,*,{text(row['person_hours'])},{text(row['visits'])},"
        f"{text(row['average_present'])},{row['released_share']},{'true' if row['suppressed'] else 'false'},"
        f"{text(row['suppressed_reason'])}"
        for row in series
    ]


def read_parquet(content: bytes) -> tuple[pa.Table, dict[str, str]]:
    parquet_file = pq.ParquetFile(pa.BufferReader(content))
    metadata = {key.decode(): value.decode() for key, value in parquet_file.metadata.metadata.items()}
    return parquet_file.read(), metadata


def png_size(content: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which must come first."""
    assert content[:8] == PNG_SIGNATURE
    assert content[12:16] == b"IHDR"
    return struct.unpack(">II", content[16:24])


def test_the_json_download_is_the_result(api, succeeded):
    report = succeeded()

    response = download(api, report, "json", "application/json")

    assert as_json(response) == report["result"]


def test_the_csv_download_is_streamed_one_line_per_bucket(api, succeeded):
    report = succeeded()

    response = download(api, report, "csv", "text/csv; charset=utf-8")

    assert response.streaming
    content = b"".join(response.streaming_content).decode()
    assert content.splitlines() == csv_lines(report["result"]["series"])
    assert "2026-03-29T00:00:00+01:00,2026-03-30T00:00:00+02:00,23," in content  # the DST day keeps its offsets


def test_the_parquet_download_holds_the_series_and_the_reports_context(api, succeeded):
    report = succeeded()
    result = report["result"]

    table, metadata = read_parquet(content(download(api, report, "parquet", "application/vnd.apache.parquet")))

    series = result["series"]
    berlin = pa.timestamp("us", tz="Europe/Berlin")
    assert table.schema.types == [
        berlin,
        berlin,
        pa.int16(),
        pa.string(),
        pa.string(),
        pa.int64(),
        pa.int64(),
        pa.float64(),
        pa.float64(),
        pa.bool_(),
        pa.string(),
    ]
    assert table.column_names == COLUMNS
    assert table.column("start").to_pylist() == [dt.datetime.fromisoformat(row["start"]) for row in series]
    assert table.column("end").to_pylist() == [dt.datetime.fromisoformat(row["end"]) for row in series]
    assert table.column("hours").to_pylist() == [row["hours"] for row in series]
    for name in ("person_hours", "visits", "average_present", "released_share", "suppressed_reason"):
        assert table.column(name).to_pylist() == [row[name] for row in series], name
    assert table.column("visits").to_pylist() == table.column("person_hours").to_pylist()
    assert table.column("suppressed").to_pylist() == [False] * len(series)
    assert {key: metadata.get(key) for key in ("product", "metric", "granularity", "time_zone")} == {
        "product": "footfall",
        "metric": "person_hours",
        "granularity": "day",
        "time_zone": "Europe/Berlin",
    }
    assert metadata["dataset_version"] == str(result["dataset_version"])
    assert (metadata["privacy_k"], metadata["release_policy"]) == ("10", str(current_release_policy().pk))


def test_the_png_download_is_a_1200_by_600_chart_with_gaps_where_withheld(api, city, succeeded, settings):
    # A cell's hourly value is 20 + 10 col + row + the UTC hour: under k = 60 every cell is
    # withheld from 00:00 to 06:59 UTC, and the western half of the block at every hour.
    settings.PRIVACY_K = 60
    releases_build()
    report = succeeded(granularity="hour", name="Westpark Centre")
    series = report["result"]["series"]
    published = threshold(city, 60)
    dark = [row for row in series if row["suppressed"]]
    assert len(dark) == 5 * 7
    assert {dt.datetime.fromisoformat(row["start"]).astimezone(dt.UTC).hour for row in dark} == set(range(7))
    assert {(row["person_hours"], row["suppressed_reason"]) for row in dark} == {(None, "not_released")}
    lit = [row for row in series if not row["suppressed"]]
    released_keys = set(published)
    for row in lit:
        hour = dt.datetime.fromisoformat(row["start"]).astimezone(dt.UTC)
        assert row["person_hours"] == sum(value for (_, at), value in published.items() if at == hour)
        assert row["released_share"] == round(sum((cell, hour) in released_keys for cell in grid_cells()) / 16, 4)
    assert 0 < min(row["released_share"] for row in lit) < max(row["released_share"] for row in lit) < 1
    assert report["result"]["privacy"]["suppressed_values"] == 5 * 7 + 8  # and the 8 western cells' totals
    assert report["result"]["privacy"]["cell_hours_released"] == len(published)

    response = download(api, report, "png", "image/png")

    assert png_size(response.content) == (1200, 600)
    with open(CHART_FILE, "wb") as chart:  # to look at: the suite checks only that it is a PNG of that size
        chart.write(response.content)


def test_a_report_with_every_bucket_withheld_still_downloads(api, succeeded, settings):
    settings.PRIVACY_K = 10**9
    releases_build()
    report = succeeded()
    series = report["result"]["series"]
    assert {
        (row["person_hours"], row["visits"], row["average_present"], row["released_share"], row["suppressed"])
        for row in series
    } == {(None, None, None, 0.0, True)}
    assert report["result"]["privacy"]["cell_hours_released"] == 0

    as_csv = download(api, report, "csv", "text/csv; charset=utf-8")
    as_parquet = download(api, report, "parquet", "application/vnd.apache.parquet")
    as_png = download(api, report, "png", "image/png")

    lines = b"".join(as_csv.streaming_content).decode().splitlines()
    assert lines == csv_lines(series)
    assert lines[1].endswith(",24,*,*,,,,0.0,true,not_released")
    table, metadata = read_parquet(content(as_parquet))
    assert table.column("person_hours").to_pylist() == [None] * len(series)
    assert table.column("visits").to_pylist() == [None] * len(series)
    assert table.column("suppressed").to_pylist() == [True] * len(series)
    assert metadata["privacy_k"] == str(10**9)
    assert png_size(as_png.content) == (1200, 600)


@pytest.mark.parametrize("extension", FORMATS)
def test_a_queued_report_has_no_download_yet(api, city, extension):
    report_id = api.post(REPORTS, block_order(), format="json").json()["id"]  # on_commit not run: stays queued

    assert_error(api.get(f"{REPORTS}{report_id}/result.{extension}"), 409, "report_not_succeeded")


@pytest.mark.parametrize("extension", FORMATS)
def test_another_tenants_report_cannot_be_downloaded(api, city, place, client_for, extension):
    theirs = place(block_order(), client=client_for(granted_tenant())).json()["id"]

    assert_error(api.get(f"{REPORTS}{theirs}/result.{extension}"), 404, "not_found")


@pytest.mark.parametrize(
    "extension, media_type",
    [
        ("json", "application/json"),
        ("csv", "text/csv"),
        ("parquet", "application/vnd.apache.parquet"),
        ("png", "image/png"),
    ],
)
def test_each_download_is_documented_with_its_media_type(db, extension, media_type):
    schema = yaml.safe_load(APIClient().get("/api/v1/schema/").content)

    responses = schema["paths"][f"/api/v1/reports/{{id}}/result.{extension}"]["get"]["responses"]

    assert list(responses["200"]["content"]) == [media_type]


def test_the_geojson_download_maps_each_cell_with_its_share_and_people(api, city, succeeded):
    report = succeeded()

    response = download(api, report, "geojson", "application/geo+json")

    collection = json.loads(response.content)
    assert collection["type"] == "FeatureCollection"
    assert len(collection["features"]) == report["cell_count"] == 16
    by_cell = {feature["properties"]["cell"]: feature for feature in collection["features"]}
    first = by_cell[grid.code(0, 0)]
    # The whole period's hours of that cell (the ordered area covers every cell whole).
    expected = sum(visits for (cell, hour), visits in city.items() if cell == (0, 0) and _in_report(report, hour))
    assert first["properties"] == {"cell": grid.code(0, 0), "share": 1.0, "person_hours": expected, "visits": expected}
    [ring] = first["geometry"]["coordinates"]
    corner = grid.square(0, 0, 1, 1).exterior_ring.coords
    assert ring[0] == pytest.approx(list(corner[0]), abs=1e-6)
    assert collection["properties"]["privacy"]["k"] == report["result"]["privacy"]["k"]


def grid_cells() -> list[tuple[int, int]]:
    return [(col, row) for col in range(4) for row in range(4)]


def _in_report(report: dict, hour) -> bool:
    return dt.datetime.fromisoformat(report["start"]) <= hour < dt.datetime.fromisoformat(report["end"])


def test_a_large_result_is_paged_not_inlined_and_downloads_whole(api, succeeded, settings):
    settings.RESULT_INLINE_MAX_ROWS = 10
    report = succeeded(granularity="hour")  # 119 hours, the short DST day included
    stored = selectors.report_result_document(report=Report.objects.get(pk=report["id"]))

    assert report["result"] is None
    assert report["result_rows"] == 119
    first = api.get(f"{REPORTS}{report['id']}/rows/", {"limit": 100}).json()
    rest = api.get(first["next"]).json()
    assert first["count"] == 119 and len(first["results"]) == 100 and rest["next"] is None
    assert first["results"] + rest["results"] == stored["series"]
    assert as_json(download(api, report, "json", "application/json")) == stored
    lines = content(download(api, report, "csv", "text/csv; charset=utf-8")).decode().splitlines()
    assert lines == csv_lines(stored["series"])
    table, _ = read_parquet(content(download(api, report, "parquet", "application/vnd.apache.parquet")))
    assert table.column("person_hours").to_pylist() == [row["person_hours"] for row in stored["series"]]


def test_a_broken_down_results_rows_are_the_totals_then_the_segments(api, succeeded):
    report = succeeded(breakdowns=["gender"])

    rows = api.get(f"{REPORTS}{report['id']}/rows/").json()

    assert rows["count"] == report["result_rows"] == 5 + 5 * 2
    assert rows["results"] == report["result"]["series"] + report["result"]["segments"]


def test_rows_of_a_report_not_yet_succeeded_are_a_conflict(api, city):
    report_id = api.post(REPORTS, block_order(), format="json").json()["id"]  # on_commit not run: stays queued

    assert_error(api.get(f"{REPORTS}{report_id}/rows/"), 409, "report_not_succeeded")


def test_another_tenants_rows_are_not_found(api, city, place, client_for):
    theirs = place(block_order(), client=client_for(granted_tenant())).json()["id"]

    assert_error(api.get(f"{REPORTS}{theirs}/rows/"), 404, "not_found")
