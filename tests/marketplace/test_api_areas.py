"""Areas of interest: create, list, read, delete, and every way to get the input wrong."""

import json

import pytest
from django.contrib.gis.geos import MultiPolygon, Point
from rest_framework.test import APIClient

from marketplace import services
from marketplace.models import Area, Role
from tests.errors import assert_error
from tests.factories import granted_tenant
from tests.grid import CELL, ORIGIN_EAST, ORIGIN_NORTH, geojson, square

AREAS = "/api/v1/areas/"


def corner(col: float, row: float) -> list[float]:
    """A grid corner as a GeoJSON [longitude, latitude] position."""
    point = Point(ORIGIN_EAST + col * CELL, ORIGIN_NORTH + row * CELL, srid=3035)
    point.transform(4326)
    return [point.x, point.y]


def polygon(*positions: list[float]) -> dict:
    return {"type": "Polygon", "coordinates": [list(positions)]}


def area_of(tenant, name: str = "Theirs", geometry=None) -> Area:
    return services.area_create(
        tenant=tenant, name=name, geometry=MultiPolygon(geometry or square(0, 0, 4, 4), srid=4326)
    )


def assert_invalid(response, code: str, attr: str = "geometry", *, areas_before: int) -> dict:
    body = assert_error(response, 400, code, error_type="validation_error", attr=attr)
    assert Area.objects.count() == areas_before
    return body


# --- create ---------------------------------------------------------------------------


def test_create_an_area_over_the_whole_block(api, tenant, city):
    response = api.post(AREAS, {"name": "Centre", "geometry": geojson(square(0, 0, 4, 4))}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {"id", "name", "geometry", "area_km2", "cell_count", "created_at"}
    assert body["name"] == "Centre"
    assert body["area_km2"] == pytest.approx(1.0, rel=1e-3)
    assert body["cell_count"] == 16
    assert body["geometry"]["type"] == "MultiPolygon"
    [[ring]] = body["geometry"]["coordinates"]
    expected_ring = geojson(square(0, 0, 4, 4))["coordinates"][0]
    assert len(ring) == len(expected_ring)
    for position, expected in zip(ring, expected_ring, strict=True):
        assert position == pytest.approx(expected, abs=1e-9)
    area = Area.objects.get(pk=body["id"])
    assert (area.tenant, area.name, area.cell_count) == (tenant, "Centre", 16)
    assert area.area_km2 == pytest.approx(1.0, rel=1e-3)


def test_an_area_counts_every_cell_it_touches(api, city):
    # given a 500 m square shifted by half a cell: it touches 3 x 3 cells
    response = api.post(AREAS, {"name": "Shifted", "geometry": geojson(square(0.5, 0.5, 2, 2))}, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["cell_count"] == 9
    assert response.json()["area_km2"] == pytest.approx(0.25, rel=1e-3)


def test_a_multipolygon_is_accepted(api, city):
    geometry = {
        "type": "MultiPolygon",
        "coordinates": [geojson(square(0, 0, 2, 2))["coordinates"], geojson(square(2, 2, 2, 2))["coordinates"]],
    }

    response = api.post(AREAS, {"name": "Two parts", "geometry": geometry}, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["cell_count"] == 8
    assert response.json()["area_km2"] == pytest.approx(0.5, rel=1e-3)
    assert len(response.json()["geometry"]["coordinates"]) == 2


# --- list, read, delete ---------------------------------------------------------------


def test_list_shows_only_the_callers_areas_paginated(api, tenant, city):
    mine = area_of(tenant, "Mine")
    area_of(granted_tenant(), "Theirs")

    response = api.get(AREAS)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert body["count"] == 1
    assert [area["id"] for area in body["results"]] == [str(mine.pk)]
    assert body["results"][0]["name"] == "Mine"


def test_list_paginates_with_limit_and_offset(api, tenant, city):
    for number in range(3):
        area_of(tenant, f"Area {number}")

    response = api.get(AREAS, {"limit": 2})

    body = response.json()
    assert response.status_code == 200
    assert body["count"] == 3
    assert len(body["results"]) == 2
    assert body["next"] is not None
    assert body["previous"] is None


def test_detail(api, tenant, city):
    area = area_of(tenant, "Mine")

    response = api.get(f"{AREAS}{area.pk}/")

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == str(area.pk)
    assert body["name"] == "Mine"
    assert body["cell_count"] == 16
    assert body["area_km2"] == pytest.approx(1.0, rel=1e-3)
    assert body["geometry"]["type"] == "MultiPolygon"


def test_detail_of_a_malformed_id_is_404(api, city):
    response = api.get(f"{AREAS}not-a-uuid/")

    assert_error(response, 404, "not_found")


def test_delete(api, tenant, city):
    area = area_of(tenant, "Mine")
    kept = area_of(tenant, "Kept")

    response = api.delete(f"{AREAS}{area.pk}/")

    assert response.status_code == 204
    assert not Area.objects.filter(pk=area.pk).exists()
    assert Area.objects.filter(pk=kept.pk).exists()
    assert_error(api.get(f"{AREAS}{area.pk}/"), 404, "not_found")


# --- another tenant's areas ---------------------------------------------------------------


def test_another_tenants_area_cannot_be_read(api, city):
    theirs = area_of(granted_tenant())

    response = api.get(f"{AREAS}{theirs.pk}/")

    assert_error(response, 404, "not_found")


def test_another_tenants_area_cannot_be_deleted(api, city):
    theirs = area_of(granted_tenant())

    response = api.delete(f"{AREAS}{theirs.pk}/")

    assert_error(response, 404, "not_found")
    assert Area.objects.filter(pk=theirs.pk).exists()


# --- roles -------------------------------------------------------------------------------


def test_a_viewer_sees_only_the_areas_shared_with_it(tenant, api, city):
    shared, _ = area_of(tenant, "Shared"), area_of(tenant, "Not shared")
    viewer_key, raw_key = services.api_key_create(tenant=tenant, name="board", role=Role.VIEWER)
    viewer = APIClient()
    viewer.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw_key}")
    assert viewer.get(AREAS).json()["results"] == []

    response = api.post(f"{AREAS}{shared.pk}/share/", {"viewer": viewer_key.prefix}, format="json")

    assert response.status_code == 204
    assert [result["id"] for result in viewer.get(AREAS).json()["results"]] == [str(shared.pk)]
    assert viewer.get(f"{AREAS}{shared.pk}/").status_code == 200


def test_a_viewer_cannot_create_an_area(tenant, client_for, city):
    areas_before = Area.objects.count()

    response = client_for(tenant, Role.VIEWER).post(
        AREAS, {"name": "Nope", "geometry": geojson(square(0, 0, 4, 4))}, format="json"
    )

    assert_error(response, 403, "permission_denied")
    assert Area.objects.count() == areas_before


def test_a_viewer_cannot_delete_an_area(tenant, client_for, city):
    area = area_of(tenant, "Mine")

    response = client_for(tenant, Role.VIEWER).delete(f"{AREAS}{area.pk}/")

    assert_error(response, 403, "permission_denied")
    assert Area.objects.filter(pk=area.pk).exists()


@pytest.mark.parametrize("role", [Role.OWNER, Role.ANALYST])
def test_owners_and_analysts_can_create(tenant, client_for, city, role):
    response = client_for(tenant, role).post(
        AREAS, {"name": "Ok", "geometry": geojson(square(0, 0, 4, 4))}, format="json"
    )

    assert response.status_code == 201, response.content
    assert Area.objects.filter(tenant=tenant).count() == 1


# --- bad input -----------------------------------------------------------------------------


def test_malformed_json_is_a_parse_error(api, city):
    areas_before = Area.objects.count()

    response = api.post(AREAS, data='{"name": "Broken", "geometry": ', content_type="application/json")

    assert_error(response, 400, "parse_error")
    assert Area.objects.count() == areas_before


def test_missing_name_is_required(api, city):
    areas_before = Area.objects.count()

    response = api.post(AREAS, {"geometry": geojson(square(0, 0, 4, 4))}, format="json")

    assert_invalid(response, "required", attr="name", areas_before=areas_before)


def test_missing_geometry_is_required(api, city):
    areas_before = Area.objects.count()

    response = api.post(AREAS, {"name": "No shape"}, format="json")

    assert_invalid(response, "required", areas_before=areas_before)


def _bow_tie() -> dict:
    # the edges (0,0)-(2,2) and (2,0)-(0,2) cross in the middle
    return polygon(corner(0, 0), corner(2, 2), corner(2, 0), corner(0, 2), corner(0, 0))


def _unclosed() -> dict:
    return polygon(corner(0, 0), corner(4, 0), corner(4, 4), corner(0, 4))


def _too_few_positions() -> dict:
    return polygon(corner(0, 0), corner(4, 0), corner(0, 0))


def _with_position(bad) -> dict:
    return polygon(corner(0, 0), corner(4, 0), bad, corner(0, 4), corner(0, 0))


BAD_GEOMETRIES = {
    "point": ({"type": "Point", "coordinates": corner(1, 1)}, "invalid_geometry_type"),
    "no type": ({"coordinates": geojson(square(0, 0, 4, 4))["coordinates"]}, "invalid_geometry_type"),
    "not an object": ("POLYGON((0 0, 1 0, 1 1, 0 0))", "invalid_geometry"),
    "bow tie": (_bow_tie(), "invalid_geometry"),
    "empty coordinates": ({"type": "Polygon", "coordinates": []}, "empty_geometry"),
    "missing coordinates": ({"type": "Polygon"}, "empty_geometry"),
    "multipolygon with an empty polygon": ({"type": "MultiPolygon", "coordinates": [[]]}, "empty_geometry"),
    "unclosed ring": (_unclosed(), "unclosed_ring"),
    "ring of 3 positions": (_too_few_positions(), "invalid_ring"),
    "ring that is not a list": ({"type": "Polygon", "coordinates": ["ring"]}, "invalid_ring"),
    "position of strings": (_with_position(["4", "4"]), "invalid_position"),
    "position of booleans": (_with_position([True, False]), "invalid_position"),
    "position of 1 number": (_with_position([12.0]), "invalid_position"),
    "position of 4 numbers": (_with_position([12.0, 51.0, 0.0, 0.0]), "invalid_position"),
    "longitude out of range": (_with_position([200.0, 51.0]), "invalid_position"),
    "latitude out of range": (_with_position([12.0, -91.0]), "invalid_position"),
}


@pytest.mark.parametrize(("geometry", "code"), BAD_GEOMETRIES.values(), ids=BAD_GEOMETRIES.keys())
def test_bad_geometry_is_refused(api, city, geometry, code):
    areas_before = Area.objects.count()

    response = api.post(AREAS, {"name": "Bad", "geometry": geometry}, format="json")

    assert_invalid(response, code, areas_before=areas_before)


def test_a_huge_integer_coordinate_is_an_invalid_position(api, city):
    # given a JSON integer too large for a float (valid JSON, parsed by Python as an int)
    areas_before = Area.objects.count()
    body = {"name": "Huge", "geometry": _with_position([10**400, 51])}

    response = api.post(AREAS, data=json.dumps(body), content_type="application/json")

    assert_invalid(response, "invalid_position", areas_before=areas_before)


def test_an_area_partly_outside_the_coverage_is_refused(api, city):
    areas_before = Area.objects.count()

    response = api.post(AREAS, {"name": "Spills over", "geometry": geojson(square(2, 2, 4, 4))}, format="json")

    body = assert_invalid(response, "outside_coverage", areas_before=areas_before)
    assert "0.750 km²" in body["message"]


def test_an_area_without_any_loaded_data_is_outside_the_coverage(api):
    areas_before = Area.objects.count()

    response = api.post(AREAS, {"name": "Nothing here", "geometry": geojson(square(0, 0, 4, 4))}, format="json")

    assert_invalid(response, "outside_coverage", areas_before=areas_before)


def test_an_area_too_small_is_refused(api, city):
    areas_before = Area.objects.count()

    response = api.post(AREAS, {"name": "Tiny", "geometry": geojson(square(0, 0, 1, 1))}, format="json")

    body = assert_invalid(response, "area_too_small", areas_before=areas_before)
    assert "0.25 km²" in body["message"]


def test_an_area_too_large_is_refused(api, city, settings):
    settings.AREA_MAX_KM2 = 0.5
    areas_before = Area.objects.count()

    response = api.post(AREAS, {"name": "Huge", "geometry": geojson(square(0, 0, 4, 4))}, format="json")

    body = assert_invalid(response, "area_too_large", areas_before=areas_before)
    assert "0.5 km²" in body["message"]


def test_a_name_longer_than_200_characters_is_refused(api, city):
    areas_before = Area.objects.count()

    response = api.post(AREAS, {"name": "x" * 201, "geometry": geojson(square(0, 0, 4, 4))}, format="json")

    assert_invalid(response, "max_length", attr="name", areas_before=areas_before)
