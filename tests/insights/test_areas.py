"""A report's area is weighed in the worker from the grid's cells (insights/areas.py): a cell the
grid gains under the area is in the next report, kept areas or not; the weighing's cells and
shares are PostGIS's (tests/insights/test_weighing.py)."""

import datetime as dt

import pytest
from django.contrib.gis.geos import MultiPolygon

from insights.models import DatasetVersion
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


def test_the_grid_gaining_a_cell_under_a_kept_area_is_seen_by_the_next_report(db, tmp_path):
    load(tmp_path, (0, 0), 30)
    assert footfall() == {"cells": [grid.code(0, 0)], "series": [30, 30, 30]}

    load(tmp_path, (1, 0), 50)  # its release build adds the cell to the grid and moves the catalogue's state

    assert footfall() == {"cells": [grid.code(0, 0), grid.code(1, 0)], "series": [80, 80, 80]}


def test_a_cell_beside_the_area_is_not_in_it(db, tmp_path):
    load(tmp_path, (0, 0), 30)
    load(tmp_path, (2, 0), 70)  # in the area's span of rows and columns, touching it along an edge
    load(tmp_path, (0, 1), 90)

    assert footfall() == {"cells": [grid.code(0, 0)], "series": [30, 30, 30]}
