"""Catchment: where the people present in an area live, from the home kind."""

from collections import defaultdict
from zoneinfo import ZoneInfo

import pytest
from django.contrib.gis.geos import MultiPolygon

from insights.models import Home, HomeDay, Region
from insights.reports import catchment_result
from insights.selectors import region_names
from insights.services import LoadRejected, home_load, regions_load
from tests import grid
from tests.conftest import DWELL_END as END
from tests.conftest import DWELL_START as START

BERLIN = ZoneInfo("Europe/Berlin")
HEADER = "cell,hour,home_region,visitors"


def catchment(version, *, cols=2.0, granularity="day", regions=None):
    return catchment_result(
        geometry=MultiPolygon(grid.square(0, 0, cols, 2), srid=4326),
        start=START,
        end=END,
        granularity=granularity,
        time_zone="Europe/Berlin",
        version=version,
        regions=regions,
    )


@pytest.mark.parametrize("granularity", ["hour", "day", "week"])
def test_each_home_region_counts_the_sum_of_its_rows(home, granularity):
    rows, version = home

    result = catchment(version, granularity=granularity)

    expected = defaultdict(int)
    for (_, _, region), value in rows.items():
        expected[region] += value
    released = {row["region"]: row["visitors"] for row in result["regions"]}
    assert released == {region: expected[region] for region in ("W", "E", "N", "FAR")}
    assert result["everyone"]["visitors"] == expected["*"]
    assert result["regions"][0]["region"] == "W"  # largest first
    assert result["regions"][0]["share"] == round(expected["W"] / expected["*"], 4)
    assert sum(row["visitors"] for row in result["series"]) == expected["*"]


def test_a_partial_cell_counts_its_share(home):
    rows, version = home

    result = catchment(version, cols=1.5)  # column 0 whole, column 1 half

    expected = sum(value * (1.0 if cell[0] == 0 else 0.5) for (cell, _, region), value in rows.items() if region == "E")
    assert {row["region"]: row["visitors"] for row in result["regions"]}["E"] == round(expected)


def test_days_are_local_days_including_the_short_one(home):
    rows, version = home

    result = catchment(version)

    hours = {row["start"][:10]: row["hours"] for row in result["series"]}
    assert hours == {"2026-03-27": 24, "2026-03-28": 24, "2026-03-29": 23, "2026-03-30": 24}
    by_day = defaultdict(int)
    for (_, hour, region), value in rows.items():
        if region == "*":
            by_day[hour.astimezone(BERLIN).date().isoformat()] += value
    assert {row["start"][:10]: row["visitors"] for row in result["series"]} == dict(by_day)


def test_only_the_regions_asked_for_are_listed(home):
    _, version = home

    result = catchment(version, regions=region_names(["FAR", "N"]))

    assert [row["region"] for row in result["regions"]] == ["N", "FAR"]
    assert result["regions"][1]["name"] == "Region FAR"


def test_a_region_under_k_over_the_period_is_withheld(home, settings):
    _, version = home
    settings.PRIVACY_K = 10_000  # FAR sums to 3 x 4 cells x 95 hours = 1140

    result = catchment(version)

    far = next(row for row in result["regions"] if row["region"] == "FAR")
    assert far == {
        "region": "FAR",
        "name": "Region FAR",
        "visitors": None,
        "share": None,
        "suppressed": True,
        "suppressed_reason": "below_k",
    }
    assert result["privacy"]["suppressed_values"] >= 1


def test_home_is_partitioned_and_rolled_up(home):
    rows, _ = home

    assert Home.objects.count() == len(rows)
    assert sum(HomeDay.objects.values_list("visitors", flat=True)) == sum(rows.values())


def test_an_unknown_home_region_rejects_the_file(regions, tmp_path):
    path = tmp_path / "home.csv"
    path.write_text(
        f"{HEADER}\n{grid.code(0, 0)},2026-03-29T00:00:00Z,SOUTH,9\n{grid.code(0, 0)},2026-03-29T00:00:00Z,W,9\n"
    )

    with pytest.raises(LoadRejected) as rejected:
        home_load(path=path)

    assert rejected.value.errors == [
        "line 2: home_region must be the code of a loaded region (load_regions) or *, got 'SOUTH'"
    ]
    assert not Home.objects.exists()


def test_reloading_regions_keeps_their_ids_and_a_bad_file_changes_nothing(regions, tmp_path):
    ids = dict(Region.objects.values_list("code", "id"))
    regions_load(path=regions)
    assert dict(Region.objects.values_list("code", "id")) == ids

    bad = tmp_path / "bad.geojson"
    bad.write_text(
        '{"type": "FeatureCollection", "features": ['
        '{"type": "Feature", "properties": {"code": "NEW", "name": "New"},'
        ' "geometry": {"type": "Polygon", "coordinates": [[[12.3, 51.3], [12.4, 51.3], [12.4, 51.4], [12.3, 51.3]]]}},'
        '{"type": "Feature", "properties": {"code": "bad code", "name": "x"}, "geometry": null}]}'
    )
    with pytest.raises(LoadRejected) as rejected:
        regions_load(path=bad)

    assert rejected.value.errors == ["feature 2: code must be 1-20 letters, digits, '-' or '_', got 'bad code'"]
    assert not Region.objects.filter(code="NEW").exists()
