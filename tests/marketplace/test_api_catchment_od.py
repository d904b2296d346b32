"""Catchment and od-matrix ordered over the API, computed by the worker, and downloaded."""

import io

import pyarrow.parquet as pq
import pytest

from marketplace.models import Report
from marketplace.services import product_grant
from tests import grid
from tests.downloads import content
from tests.errors import assert_error
from tests.factories import catchment_product, od_matrix_product

REGIONS = "/api/v1/regions/"
REPORTS = "/api/v1/reports/"
PERIOD = {"start": "2026-03-27T00:00:00+01:00", "end": "2026-03-31T00:00:00+02:00", "granularity": "day"}
CATCHMENT = {"product": "catchment", "geometry": grid.geojson(grid.square(0, 0, 2, 2)), **PERIOD}
OD_MATRIX = {"product": "od-matrix", "geometry": grid.geojson(grid.square(0, 0, 4, 8)), **PERIOD}


@pytest.fixture
def granted(tenant):
    product_grant(tenant=tenant, product=catchment_product())
    product_grant(tenant=tenant, product=od_matrix_product())


def order(api, body, django_capture_on_commit_callbacks) -> dict:
    with django_capture_on_commit_callbacks(execute=True):
        created = api.post(REPORTS, body, format="json")
    assert created.status_code == 201, created.content
    return api.get(f"{REPORTS}{created.json()['id']}/").json()


def download(api, report: dict, extension: str):
    response = api.get(f"{REPORTS}{report['id']}/result.{extension}")
    assert response.status_code == 200, response.content
    return response


def test_the_regions_are_listed_with_their_boundaries(api, regions):
    response = api.get(REGIONS)

    assert response.status_code == 200
    listed = response.json()["results"]
    assert [region["code"] for region in listed] == ["E", "FAR", "N", "W"]
    assert listed[0]["name"] == "Region E"
    assert listed[0]["area_km2"] == pytest.approx(0.5, abs=1e-3)
    assert listed[0]["geometry"]["type"] == "MultiPolygon"


def test_a_catchment_is_ordered_and_downloaded(api, home, granted, django_capture_on_commit_callbacks):
    report = order(api, CATCHMENT, django_capture_on_commit_callbacks)

    assert report["status"] == "succeeded", report
    result = report["result"]
    assert [row["region"] for row in result["regions"]] == ["W", "N", "E", "FAR"]
    assert report["regions"] == []
    csv_lines = b"".join(download(api, report, "csv").streaming_content).decode().splitlines()
    assert csv_lines[0] == "region,name,visitors,share,suppressed,suppressed_reason"
    assert csv_lines[1].startswith(f"W,Region W,{result['regions'][0]['visitors']},")
    table = pq.read_table(io.BytesIO(content(download(api, report, "parquet"))))
    assert table.column("region").to_pylist() == ["W", "N", "E", "FAR"]
    assert download(api, report, "png").content.startswith(b"\x89PNG")
    features = download(api, report, "geojson").json()["features"]
    assert [feature["properties"]["region"] for feature in features] == ["W", "N", "E", "FAR"]
    assert features[0]["geometry"]["type"] == "MultiPolygon"


def test_an_od_matrix_is_ordered_between_the_zones_of_the_area(api, trips, granted, django_capture_on_commit_callbacks):
    report = order(api, OD_MATRIX, django_capture_on_commit_callbacks)

    assert report["status"] == "succeeded", report
    assert report["regions"] == ["E", "N", "W"]
    result = report["result"]
    assert [zone["zone"] for zone in result["zones"]] == ["E", "N", "W"]
    assert len(result["matrix"]) == 3 and all(len(row) == 3 for row in result["matrix"])
    assert len(result["flows"]) == 4 * 8  # four days, eight pairs (E -> N has none)
    csv_lines = b"".join(download(api, report, "csv").streaming_content).decode().splitlines()
    assert csv_lines[0] == "start,end,hours,origin,destination,trips,suppressed,suppressed_reason"
    assert len(csv_lines) == 1 + 32
    assert download(api, report, "png").content.startswith(b"\x89PNG")
    features = download(api, report, "geojson").json()["features"]
    assert sorted(feature["geometry"]["type"] for feature in features) == ["LineString"] * 5 + ["MultiPolygon"] * 3


def test_an_od_matrix_of_chosen_zones(api, trips, granted, django_capture_on_commit_callbacks):
    report = order(api, {**OD_MATRIX, "regions": ["W", "N"]}, django_capture_on_commit_callbacks)

    assert [zone["zone"] for zone in report["result"]["zones"]] == ["W", "N"]
    assert {(flow["origin"], flow["destination"]) for flow in report["result"]["flows"]} == {
        ("W", "W"),
        ("W", "N"),
        ("N", "W"),
        ("N", "N"),
    }


@pytest.mark.parametrize(
    ("body", "code", "attr"),
    [
        ({**OD_MATRIX, "regions": ["W", "SOUTH", "NOWHERE"]}, "unknown_regions", "regions"),
        ({**CATCHMENT, "regions": ["SOUTH"]}, "unknown_regions", "regions"),
        ({**OD_MATRIX, "regions": ["FAR"]}, "zones_outside_area", "regions"),
        ({**OD_MATRIX, "geometry": grid.geojson(grid.square(20, 20, 2, 2))}, "no_zones_in_area", "geometry"),
        ({**OD_MATRIX, "breakdowns": ["gender"]}, "breakdown_not_offered", "breakdowns"),
    ],
)
def test_bad_region_choices_are_refused_and_nothing_is_stored(api, home, trips, granted, body, code, attr):
    assert_error(api.post(REPORTS, body, format="json"), 400, code, attr=attr)
    assert Report.objects.count() == 0


def test_other_products_take_no_regions(api, city, regions):
    body = {**CATCHMENT, "product": "footfall", "regions": ["W"]}

    assert_error(api.post(REPORTS, body, format="json"), 400, "regions_not_offered")
    assert Report.objects.count() == 0


def test_an_od_matrix_needs_trips_loaded(api, home, granted):
    assert_error(api.post(REPORTS, OD_MATRIX, format="json"), 400, "no_data", attr="start")
    assert Report.objects.count() == 0
