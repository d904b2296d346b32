"""An area's cell weights are stored with it (insights/areas.py): any worker's first report of an
area seen before reads them instead of weighing the area in PostGIS, with the same numbers, and
never stale ones: the grid gaining a cell under the area is seen by the next report."""

import datetime as dt

import psycopg
import pytest
from django.contrib.gis.geos import MultiPolygon

import insights.areas
from insights.models import AreaWeights, DatasetVersion
from insights.reports import Query, footfall_result
from insights.selectors import current_release_policy
from insights.sums import caches_clear
from tests import grid
from tests.conftest import CITY_START

HOURS = (CITY_START, CITY_START + dt.timedelta(hours=3))
WEST_PAIR = MultiPolygon(grid.square(0, 0, 2, 1), srid=4326)  # cells (0, 0) and (1, 0)


@pytest.fixture(autouse=True)
def nothing_kept():
    caches_clear()
    yield
    caches_clear()


def footfall(area=WEST_PAIR) -> dict:
    result = footfall_result(
        Query(
            geometry=area,
            start=HOURS[0],
            end=HOURS[1],
            granularity="hour",
            time_zone="Europe/Berlin",
            version=DatasetVersion.objects.latest("pk").pk,
            policy=current_release_policy(),
        )
    )
    return {
        "cells": [row["cell"] for row in result["cells"]],
        "series": [row["person_hours"] for row in result["series"]],
    }


def load(tmp_path, cell: tuple[int, int], visits: int) -> None:
    grid.load_totals(tmp_path / f"{cell}.csv", cells=[cell], start=HOURS[0], end=HOURS[1], visits=lambda *_: visits)


def no_weighing(monkeypatch):
    """From here on, weighing an area in PostGIS fails the test."""
    monkeypatch.setattr(insights.areas, "_WEIGH_SQL", "SELECT 1 / 0")


def test_a_new_worker_reads_the_stored_weights_of_an_area_seen_before(db, tmp_path, monkeypatch):
    load(tmp_path, (0, 0), 30)
    load(tmp_path, (1, 0), 50)
    first = footfall()
    assert AreaWeights.objects.count() == 1

    caches_clear()  # a worker that never saw the area
    no_weighing(monkeypatch)

    assert footfall() == first == {"cells": [grid.code(0, 0), grid.code(1, 0)], "series": [80, 80, 80]}


def test_the_grid_gaining_a_cell_under_the_area_is_seen_by_a_new_worker(db, tmp_path):
    load(tmp_path, (0, 0), 30)
    assert footfall() == {"cells": [grid.code(0, 0)], "series": [30, 30, 30]}

    load(tmp_path, (1, 0), 50)  # its release build adds the cell to the grid
    caches_clear()

    assert footfall() == {"cells": [grid.code(0, 0), grid.code(1, 0)], "series": [80, 80, 80]}
    assert AreaWeights.objects.get().cell_ids == [grid.cell_id_of((0, 0)), grid.cell_id_of((1, 0))]


def test_a_cell_added_away_from_the_area_leaves_its_stored_weights(db, tmp_path, monkeypatch):
    load(tmp_path, (0, 0), 30)
    before = footfall()
    load(tmp_path, (5, 5), 70)
    caches_clear()
    no_weighing(monkeypatch)

    assert footfall() == before


def test_a_forgotten_area_is_weighed_again(db, tmp_path, monkeypatch):
    load(tmp_path, (0, 0), 30)
    footfall()
    insights.areas.forget_stored(WEST_PAIR)
    caches_clear()
    no_weighing(monkeypatch)

    with pytest.raises(psycopg.errors.DivisionByZero):
        footfall()


def test_a_new_area_weighed_outside_a_transaction_is_stored_by_its_own(transactional_db, tmp_path):
    load(tmp_path, (0, 0), 30)
    assert footfall() == {"cells": [grid.code(0, 0)], "series": [30, 30, 30]}

    assert AreaWeights.objects.get().cell_ids == [grid.cell_id_of((0, 0))]
