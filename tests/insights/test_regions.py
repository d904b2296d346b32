"""A worker keeps the regions' codes and names (insights/regions.py), read again only when they
change: a rename, by a load or anywhere else, is seen by the next look, and a rename rolled back
is never served."""

import json

import pytest
from django.db import transaction

import insights.regions
from insights import catalogue
from insights.kinds import HOME
from insights.models import Region
from insights.selectors import region_names_by_id
from insights.services import regions_load


@pytest.fixture(autouse=True)
def nothing_kept():
    insights.regions.forget()
    yield
    insights.regions.forget()


def east() -> int:
    return Region.objects.get(code="E").pk


@pytest.fixture
def states_asked(monkeypatch) -> list:
    """Each time the releases' state is asked (a statement through psycopg, which Django does not count)."""
    asked = []
    release_state = catalogue.release_state
    monkeypatch.setattr(catalogue, "release_state", lambda: asked.append(1) or release_state())
    return asked


def test_the_regions_are_read_once_until_they_change(regions, django_assert_num_queries, states_asked):
    region = east()
    assert region_names_by_id([region]) == {region: ("E", "Region E")}

    states_asked.clear()
    with django_assert_num_queries(0):  # the change mark, with the releases' state once a look
        assert region_names_by_id([region]) == {region: ("E", "Region E")}
        assert HOME.labels()["home_region"][region] == "E"
    assert len(states_asked) == 2


def test_a_region_renamed_by_a_load_is_named_anew(regions, tmp_path):
    region_names_by_id([east()])
    collection = json.loads(regions.read_text())
    collection["features"][0]["properties"]["name"] = "Hafen"
    renamed = tmp_path / "renamed.geojson"
    renamed.write_text(json.dumps(collection))
    regions_load(path=renamed)

    code = collection["features"][0]["properties"]["code"]
    assert insights.regions.regions()[Region.objects.get(code=code).pk] == (code, "Hafen")


def test_a_rename_rolled_back_is_never_served(regions):
    with transaction.atomic():
        Region.objects.filter(code="E").update(name="Ost")
        assert region_names_by_id([east()]) == {east(): ("E", "Ost")}
        transaction.set_rollback(True)

    assert region_names_by_id([east()]) == {east(): ("E", "Region E")}
    Region.objects.filter(code="E").update(name="Osten")
    assert region_names_by_id([east()]) == {east(): ("E", "Osten")}


def test_a_report_that_looked_at_the_catalogue_asks_nothing_more_for_the_regions(
    regions, django_assert_num_queries, states_asked
):
    region = east()
    region_names_by_id([region])

    states_asked.clear()
    with django_assert_num_queries(0), catalogue.one_look():  # the releases' state, with the regions' mark
        for _ in range(3):
            assert region_names_by_id([region]) == {region: ("E", "Region E")}
            assert HOME.labels()["home_region"][region] == "E"
    assert len(states_asked) == 1
