"""Catchment: where the people present in an area live, from the home kind."""

from collections import defaultdict
from zoneinfo import ZoneInfo

import pytest
from django.contrib.gis.geos import MultiPolygon

import insights.sums
from insights.models import Home, Region
from insights.reports import Query, catchment_result
from insights.selectors import current_release_policy, region_names
from insights.services import LoadRejected, home_load, regions_load
from tests import grid
from tests.conftest import DWELL_END as END
from tests.conftest import DWELL_START as START
from tests.insights.conftest import as_stored, decide, published

BERLIN = ZoneInfo("Europe/Berlin")
HEADER = "cell,hour,home_region,visitors"


def catchment(version, *, cols=2.0, granularity="day", regions=None):
    return catchment_result(
        Query(
            geometry=MultiPolygon(grid.square(0, 0, cols, 2), srid=4326),
            start=START,
            end=END,
            granularity=granularity,
            time_zone="Europe/Berlin",
            version=version,
            policy=current_release_policy(),
            regions=regions,
        )
    )


def released(rows) -> dict:
    """The rows the release publishes (k = 10): per cell-hour, * and W (20 or more) and N (11);
    E (8 or 9) and FAR (3) are under k, and * minus W and N leaves 20 or 21 (E, FAR and the 9 of
    unknown home) over 2 withheld regions, so nothing more is withheld."""
    why = decide("home", rows, k=10)
    return {key: value for key, value in rows.items() if why[key] is None}


@pytest.mark.parametrize("granularity", ["hour", "day", "week"])
def test_each_home_region_counts_the_sum_of_its_rows(home, granularity):
    rows, version = home

    result = catchment(version, granularity=granularity)

    expected = defaultdict(int)
    for (_, _, region), value in released(rows).items():
        expected[region] += value
    assert set(expected) == {"*", "W", "N"}
    # By default the regions with released values are listed, largest first.
    listed = {row["region"]: row["person_hours"] for row in result["regions"]}
    assert listed == {"W": expected["W"], "N": expected["N"]}
    assert {row["region"]: row["visitors"] for row in result["regions"]} == listed  # the deprecated name
    assert result["everyone"] == {"person_hours": expected["*"], "visitors": expected["*"]}
    assert [row["region"] for row in result["regions"]] == ["W", "N"]
    assert result["regions"][0]["share"] == round(expected["W"] / expected["*"], 4)
    assert sum(row["person_hours"] for row in result["series"]) == expected["*"]


def test_a_partial_cell_counts_its_share(home):
    rows, version = home

    result = catchment(version, cols=1.5)  # column 0 whole, column 1 half

    expected = sum(
        value * (1.0 if cell[0] == 0 else 0.5) for (cell, _, region), value in released(rows).items() if region == "W"
    )
    assert {row["region"]: row["person_hours"] for row in result["regions"]}["W"] == round(expected)


def test_days_are_local_days_including_the_short_one(home):
    rows, version = home

    result = catchment(version)

    hours = {row["start"][:10]: row["hours"] for row in result["series"]}
    assert hours == {"2026-03-27": 24, "2026-03-28": 24, "2026-03-29": 23, "2026-03-30": 24}
    by_day = defaultdict(int)
    for (_, hour, region), value in rows.items():
        if region == "*":
            by_day[hour.astimezone(BERLIN).date().isoformat()] += value
    assert {row["start"][:10]: row["person_hours"] for row in result["series"]} == dict(by_day)


def test_only_the_regions_asked_for_are_listed(home):
    _, version = home

    result = catchment(version, regions=region_names(["FAR", "N"]))

    assert [row["region"] for row in result["regions"]] == ["N", "FAR"]
    assert result["regions"][1]["name"] == "Region FAR"


def test_a_region_under_k_in_every_cell_hour_is_withheld_however_long_the_period(home):
    _, version = home  # FAR is 3 an hour: 1140 over the period, but no hour of it is released

    result = catchment(version, regions=region_names(["W", "N", "E", "FAR"]))

    far = next(row for row in result["regions"] if row["region"] == "FAR")
    assert far == {
        "region": "FAR",
        "name": "Region FAR",
        "person_hours": None,
        "visitors": None,
        "share": None,
        "suppressed": True,
        "suppressed_reason": "not_released",
    }
    assert [row["region"] for row in result["regions"]] == ["W", "N", "E", "FAR"]  # withheld last
    assert result["privacy"]["suppressed_values"] == 2  # E and FAR; every bucket and cell is released


def test_home_is_partitioned_and_its_release_rolled_up(home):
    rows, version = home

    assert Home.objects.count() == len(rows)
    hourly = published("home", version=version)
    assert hourly == as_stored("home", released(rows))
    days = published("home", version=version, period="day")
    assert sum(value for value, _ in days.values()) == sum(released(rows).values())
    assert sum(hours for _, hours in days.values()) == len(hourly)


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


@pytest.mark.parametrize("granularity", ["hour", "day"])
def test_a_large_area_read_once_gives_the_two_passes_document(home, monkeypatch, granularity):
    _, version = home
    two_passes = catchment(version, granularity=granularity)
    monkeypatch.setattr(insights.sums, "ROWS_AT_ONCE", 0)  # every area counts as large: read once

    one_read = catchment(version, granularity=granularity)

    def documents(result):
        return {name: list(part) if hasattr(part, "table") else part for name, part in result.items()}

    assert documents(one_read) == documents(two_passes)
