"""How a report's packed rows are read: many place-months read at once (not kept place by
place), and a comparison's two periods over one area read in one statement, give the numbers
of the reads they stand for."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

import insights.compare
import insights.held
import insights.sums
from insights.compare import compare_result
from insights.reports import dwell_result, footfall_result, od_matrix_result
from insights.selectors import region_names
from insights.summed import SUMMED
from insights.sums import HELD, caches_clear
from tests import grid
from tests.conftest import CITY_END, DWELL_END, DWELL_START
from tests.insights.report_queries import query, tables

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture(autouse=True)
def nothing_kept(settings):
    settings.SHARED_MONTHS_URL = ""  # the statements this worker reads: none from the node's shared months
    caches_clear()
    yield
    caches_clear()


def statements(monkeypatch) -> list:
    """Each statement reading packed rows for the months kept (insights/held.py) from here on."""
    read = []
    rows = insights.held._rows

    def counted(*args, **kwargs):
        read.append(kwargs["wanted_months"])
        return rows(*args, **kwargs)

    monkeypatch.setattr(insights.held, "_rows", counted)
    return read


@pytest.mark.parametrize("granularity", ["hour", "day"])
def test_many_place_months_are_read_at_once_with_the_numbers_of_the_months_kept(
    city, tmp_path, monkeypatch, granularity
):
    # Two hours more of one cell in a version of its own (two rows of its month, added up), and
    # two in the next month (in the day rollup, the same local day as those two: one row).
    later, april = CITY_END + dt.timedelta(hours=2), CITY_END + dt.timedelta(hours=4)
    grid.load_totals(tmp_path / "later.csv", cells=[(1, 1)], start=CITY_END, end=later, visits=lambda *_: 40)
    grid.load_totals(tmp_path / "april.csv", cells=[(1, 1)], start=later, end=april, visits=lambda *_: 30)
    end = april if granularity == "hour" else dt.datetime(2026, 4, 2, tzinfo=BERLIN)
    kept = tables(footfall_result(query(end=end, granularity=granularity)))
    assert len(HELD) == 2 * 9  # the two months of each of the area's cells

    caches_clear()
    monkeypatch.setattr(insights.sums, "HELD_PLACE_MONTHS", 0)  # every read is of many place-months
    read = tables(footfall_result(query(end=end, granularity=granularity)))

    assert (len(HELD), len(SUMMED)) == (0, 2)  # only the months summed for the area are kept
    assert read == kept
    [middle] = [row for row in read["cells"] if row["cell"] == grid.code(1, 1)]
    assert middle["person_hours"] == sum(visits for (cell, _), visits in city.items() if cell == (1, 1)) + 80 + 60


def test_dwell_bands_and_od_matrix_zones_read_at_once_give_the_numbers_of_the_months_kept(dwell, trips, monkeypatch):
    orders = [
        (dwell_result, query(start=DWELL_START, end=DWELL_END)),
        (od_matrix_result, query(None, start=DWELL_START, end=DWELL_END, regions=region_names(["E", "N", "W"]))),
    ]
    kept = [tables(compute(order)) for compute, order in orders]

    caches_clear()
    monkeypatch.setattr(insights.sums, "HELD_PLACE_MONTHS", 0)

    assert [tables(compute(order)) for compute, order in orders] == kept
    assert len(HELD) == 0


def day(number: int) -> dt.datetime:
    """Local midnight of a day of March 2026 (the city's days: 27 to 31, summer time from the 29th)."""
    return dt.datetime(2026, 3, number, tzinfo=BERLIN)


@pytest.mark.parametrize(
    ("granularity", "ordered", "compared"),
    [
        ("day", (29, 31), (27, 29)),  # the days before, across the change to summer time
        ("hour", (27, 28), (28, 29)),  # the day after
        ("hour", (30, 31), (27, 28)),  # a day between them, read and left out
        ("week", (30, 32), (27, 29)),  # buckets from each period's own start
    ],
)
def test_a_comparison_over_one_area_reads_both_periods_in_one_statement(
    city, monkeypatch, granularity, ordered, compared
):
    order = query(
        start=day(ordered[0]),
        end=day(ordered[1]) if ordered[1] < 32 else CITY_END,
        comparison_start=day(compared[0]),
        comparison_end=day(compared[1]),
        granularity=granularity,
    )
    read = statements(monkeypatch)
    at_once = tables(compare_result(order))
    assert len(read) == 1

    caches_clear()
    monkeypatch.setattr(insights.compare, "one_read_of_both", lambda *args, **kwargs: False)
    apart = tables(compare_result(order))

    assert len(read) == 2
    assert at_once == apart
    periods = {"": (order.start, order.end), "comparison_": (order.comparison_start, order.comparison_end)}
    for name, (start, end) in periods.items():
        caches_clear()
        alone = footfall_result(query(start=start, end=end, granularity=granularity), with_cells=False)
        assert [(row[f"{name}start"], row[f"{name}person_hours"]) for row in at_once["series"]] == [
            (row["start"], row["person_hours"]) for row in alone["series"]
        ]
