"""Catchment and od-matrix ordered over the API, computed by the worker, and downloaded."""

import io
from collections import defaultdict

import pyarrow.parquet as pq
import pytest

from marketplace.models import Report
from marketplace.services import product_grant
from tests import grid
from tests.downloads import content
from tests.errors import assert_error
from tests.factories import catchment_product, od_matrix_product, order_body

REGIONS = "/api/v1/regions/"
REPORTS = "/api/v1/reports/"
END = "2026-03-31T00:00:00+02:00"  # from 27 March: the four local days the home and trips fixtures load
CATCHMENT = order_body(product="catchment", geometry=grid.geojson(grid.square(0, 0, 2, 2)), end=END)
OD_MATRIX = order_body(product="od-matrix", geometry=grid.geojson(grid.square(0, 0, 4, 8)), end=END)


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


def home_sums(home) -> dict[str, int]:
    """Each home region's hourly values of the 2 x 2 block over the whole period, and everyone's
    ("*"), where every value is published: E (8 or 9 an hour) and FAR (3) are under k."""
    rows, _ = home
    sums = defaultdict(int)
    for (_, _, region), value in rows.items():
        sums[region] += value
    return sums


def test_a_catchment_is_ordered_and_downloaded(api, home, granted, django_capture_on_commit_callbacks):
    report = order(api, CATCHMENT, django_capture_on_commit_callbacks)

    assert report["status"] == "succeeded", report
    result = report["result"]
    sums = home_sums(home)
    # Only the regions with published values are listed: E and FAR were under k every hour.
    assert result["regions"] == [
        {
            "region": code,
            "name": f"Region {code}",
            "person_hours": sums[code],
            "visitors": sums[code],  # deprecated: person_hours
            "share": round(sums[code] / sums["*"], 4),
            "suppressed": False,
            "suppressed_reason": None,
        }
        for code in ("W", "N")
    ]
    assert sums["N"] == 11 * 4 * 95
    assert result["everyone"] == {"person_hours": sums["*"], "visitors": sums["*"]}
    assert sum(row["person_hours"] for row in result["series"]) == sums["*"]
    assert report["regions"] == []
    privacy = result["privacy"]
    assert (privacy["breakdown_values"], privacy["breakdown_values_released"]) == (4 * 95 * 2, 4 * 95 * 2)
    assert (privacy["cell_hours"], privacy["cell_hours_released"], privacy["suppressed_values"]) == (4 * 95, 4 * 95, 0)
    csv_lines = b"".join(download(api, report, "csv").streaming_content).decode().splitlines()
    assert csv_lines == [
        "region,name,person_hours,visitors,share,suppressed,suppressed_reason",
        *(
            f"{row['region']},{row['name']},{row['person_hours']},{row['person_hours']},{row['share']},false,"
            for row in result["regions"]
        ),
    ]
    table = pq.read_table(io.BytesIO(content(download(api, report, "parquet"))))
    assert table.column("region").to_pylist() == ["W", "N"]
    assert table.column("person_hours").to_pylist() == [sums["W"], sums["N"]]
    assert download(api, report, "png").content.startswith(b"\x89PNG")
    features = download(api, report, "geojson").json()["features"]
    assert [feature["properties"]["region"] for feature in features] == ["W", "N"]
    assert features[0]["geometry"]["type"] == "MultiPolygon"


def test_a_catchment_lists_the_chosen_regions_with_nothing_published_as_suppressed(
    api, home, granted, django_capture_on_commit_callbacks
):
    report = order(api, {**CATCHMENT, "regions": ["FAR", "E", "W"]}, django_capture_on_commit_callbacks)

    assert report["status"] == "succeeded", report
    sums = home_sums(home)
    assert [
        (row["region"], row["person_hours"], row["share"], row["suppressed"], row["suppressed_reason"])
        for row in report["result"]["regions"]
    ] == [
        ("W", sums["W"], round(sums["W"] / sums["*"], 4), False, None),
        ("E", None, None, True, "not_released"),
        ("FAR", None, None, True, "not_released"),
    ]
    privacy = report["result"]["privacy"]
    assert (privacy["breakdown_values"], privacy["breakdown_values_released"]) == (4 * 95 * 3, 4 * 95)
    assert privacy["suppressed_values"] == 2


def test_an_od_matrix_is_ordered_between_the_zones_of_the_area(api, trips, granted, django_capture_on_commit_callbacks):
    report = order(api, OD_MATRIX, django_capture_on_commit_callbacks)

    assert report["status"] == "succeeded", report
    assert report["regions"] == ["E", "N", "W"]
    result = report["result"]
    assert [zone["zone"] for zone in result["zones"]] == ["E", "N", "W"]
    rows, _ = trips
    # N -> E (2 an hour) is under k every hour and E -> N has no trips: neither has a number.
    pairs = defaultdict(int)
    for (origin, destination, _), value in rows.items():
        if (origin, destination) != ("N", "E"):
            pairs[(origin, destination)] += value
    assert result["matrix"] == [[pairs.get((origin, destination)) for destination in "ENW"] for origin in "ENW"]
    assert result["matrix"][0][1] is None and result["matrix"][1][0] is None
    assert len(result["flows"]) == 4 * 7  # four days, the seven pairs with published trips
    assert {(flow["origin"], flow["destination"]) for flow in result["flows"]} == set(pairs)
    assert {flow["released_share"] for flow in result["flows"]} == {1.0}
    assert all("suppressed" not in flow for flow in result["flows"])
    assert result["privacy"] | {"release_policy": None} == {
        "release_policy": None,
        "k": 10,
        "round_to": 1,
        "noise": False,
        "zone_pair_hours": 9 * 95,
        "zone_pair_hours_released": 7 * 95,
        "released_share": round(7 / 9, 4),
        "suppressed_values": 2,
    }
    csv_lines = b"".join(download(api, report, "csv").streaming_content).decode().splitlines()
    assert csv_lines[0] == "start,end,hours,origin,destination,trips,released_share"
    assert len(csv_lines) == 1 + 28
    assert download(api, report, "png").content.startswith(b"\x89PNG")
    features = download(api, report, "geojson").json()["features"]
    # A line per pair of two zones with published trips: W <-> E and W <-> N.
    assert sorted(feature["geometry"]["type"] for feature in features) == ["LineString"] * 4 + ["MultiPolygon"] * 3


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
