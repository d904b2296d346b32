"""The node's own copy of the recent months (insights/local_months.py): a report read from it
has the numbers of one read from PostgreSQL, for every kind, source and segment condition, and
reads nothing from the database; a new release for a month, a new policy and retention (the ways
released rows change) are never served from an old copy; the copy is written after a release,
holds the recent months only, and is deleted with what retention drops."""

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from django.contrib.gis.geos import MultiPolygon

import insights.areas
import insights.held
import insights.sums
from insights import local_months
from insights.compare import compare_result
from insights.releases import releases_build
from insights.reports import catchment_result, dwell_result, footfall_result, od_matrix_result
from insights.selectors import region_names
from insights.services import aggregates_retain
from insights.sums import caches_clear
from marketplace.services import warmup
from marketplace.tasks import warm_ordered_areas
from tests import grid
from tests.conftest import CITY_START, DWELL_END, DWELL_START
from tests.insights.report_queries import BLOCK, query, tables
from tests.insights.test_breakdowns import END as SEGMENTED_END
from tests.insights.test_breakdowns import START as SEGMENTED_START
from tests.insights.test_breakdowns import segmented  # noqa: F401 (a fixture)

UTC = dt.UTC
DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)


@pytest.fixture
def database_reads(monkeypatch) -> list:
    """The statements reports send for packed months, from here on."""
    sent = []
    rows = insights.held._rows

    def counted(*args, **kwargs):
        sent.append(kwargs.get("wanted_months"))
        return rows(*args, **kwargs)

    monkeypatch.setattr(insights.held, "_rows", counted)
    return sent


def copied(settings, tmp_path: Path) -> list[str]:
    """Turn the copy on in tmp_path, write it, and start as a worker that holds and shares nothing."""
    settings.LOCAL_MONTHS_DIR = str(tmp_path / "local-months")
    settings.SHARED_MONTHS_URL = ""
    written = local_months.write()
    caches_clear()
    return written


def from_database(settings, compute, order) -> dict:
    """The result of a worker that reads every month from PostgreSQL."""
    directory, url = settings.LOCAL_MONTHS_DIR, settings.SHARED_MONTHS_URL
    settings.LOCAL_MONTHS_DIR, settings.SHARED_MONTHS_URL = "", ""
    caches_clear()
    result = tables(compute(order))
    settings.LOCAL_MONTHS_DIR, settings.SHARED_MONTHS_URL = directory, url
    caches_clear()
    return result


DWELL_DAYS = {"start": DWELL_START, "end": DWELL_END}
LARGE = MultiPolygon(grid.square(0, 0, 4, 4), srid=4326)  # 16 cells x 2 months: read_months, not held_values


@pytest.mark.parametrize(
    "data,compute,order",
    [
        ("city", footfall_result, {}),
        ("city", footfall_result, {"granularity": "day"}),
        ("city", footfall_result, {"geometry": LARGE}),
        (
            "city",
            compare_result,
            {"end": CITY_START + DAY, "comparison_start": CITY_START + DAY, "comparison_end": CITY_START + 2 * DAY},
        ),
        ("dwell", dwell_result, DWELL_DAYS),
        ("dwell", dwell_result, {**DWELL_DAYS, "granularity": "day"}),
        ("home", catchment_result, {**DWELL_DAYS, "granularity": "day"}),
        ("trips", od_matrix_result, {**DWELL_DAYS, "geometry": None}),
        ("segmented", footfall_result, {"start": SEGMENTED_START, "end": SEGMENTED_END, "breakdowns": ["age_band"]}),
        (
            "segmented",
            footfall_result,
            {
                "start": SEGMENTED_START,
                "end": SEGMENTED_END,
                "breakdowns": ["age_band", "gender"],
                "granularity": "day",
            },
        ),
    ],
    ids=[
        "hours",
        "days",
        "many-places",
        "compare",
        "dwell-hours",
        "dwell-days",
        "catchment",
        "od-matrix",
        "by-age",
        "by-age-and-gender",
    ],
)
def test_a_report_read_from_the_copy_has_the_numbers_of_the_database(
    request, settings, tmp_path, monkeypatch, database_reads, data, compute, order
):
    request.getfixturevalue(data)
    if data == "trips":
        order = {**order, "regions": region_names(["W", "E", "N"])}
    made = query(**{"geometry": BLOCK, **order})
    rows = months_summed(monkeypatch)
    expected = from_database(settings, compute, made)
    expected_rows = list(rows)
    rows.clear()
    database_reads.clear()

    assert copied(settings, tmp_path)
    assert tables(compute(made)) == expected
    assert database_reads == []
    # The same months summed, to the bit: the copy's rows of the segments the database's condition
    # reads, added in the same order.
    assert rows == expected_rows


def months_summed(monkeypatch) -> list:
    """Each month summed from here on (insights.summed.SummedMonth), as lists."""
    found = []
    keep = insights.sums.keep

    def recorded(summed, **kwargs):
        for _, _, month in summed:
            parts = (month.groups, month.value, month.weight, month.count, month.place_value, month.place_count)
            found.append([None if part is None else part.tolist() for part in parts])
        return keep(summed, **kwargs)

    monkeypatch.setattr(insights.sums, "keep", recorded)
    return found


def test_a_new_release_of_a_copied_month_is_read_from_the_database_until_copied(
    city, settings, tmp_path, database_reads
):
    copied(settings, tmp_path)
    later = dt.datetime(2026, 3, 31, 22, tzinfo=UTC)
    grid.load_totals(
        tmp_path / "later.csv", cells=[(1, 1)], start=later, end=later + dt.timedelta(hours=2), visits=lambda *_: 40
    )
    order = query(end=later + dt.timedelta(hours=2))  # of the new version
    caches_clear()
    database_reads.clear()

    assert [row["person_hours"] for row in footfall_result(order)["series"]][-2:] == [40, 40]
    assert database_reads  # the copy of March is the release before

    before = copies(settings)
    assert local_months.write()  # what the release's warm-up does
    after = copies(settings)
    assert set(before).isdisjoint(after)  # the old copies deleted
    assert sorted(path.parent.name for path in after) == ["2026-03", "2026-03", "2026-04"]  # day rows of 1 April
    expected = from_database(settings, footfall_result, order)
    database_reads.clear()
    assert tables(footfall_result(order)) == expected
    assert database_reads == []


@pytest.mark.parametrize("batch_rows", [1, 2_000])  # 1: each place's versions met across batches
def test_a_month_of_several_versions_is_copied_a_row_per_place_and_segment(
    city, settings, tmp_path, monkeypatch, database_reads, batch_rows
):
    later = dt.datetime(2026, 3, 31, 22, tzinfo=UTC)  # a second version of March for two cells
    grid.load_totals(
        tmp_path / "later.csv", cells=[(1, 1), (2, 2)], start=later, end=later + 2 * HOUR, visits=lambda *_: 40
    )
    order = query(end=later + 2 * HOUR)
    expected = from_database(settings, footfall_result, order)
    monkeypatch.setattr(local_months, "_BATCH_ROWS", batch_rows)

    written = copied(settings, tmp_path)
    assert any(line.startswith("insights_presence_released 2026-03: 18 rows") for line in written)  # 16 + 2 read
    for path in copies(settings):
        copy = local_months._mapped(path)
        rows = list(zip(np.repeat(copy.place, np.diff(copy.bounds)).tolist(), copy.segment.tolist(), strict=True))
        assert len(rows) == len(set(rows)) == len(copy.values) == len(copy.counts)  # the versions added
        if path.parent.name == "2026-03" and path.parent.parent.name == "insights_presence_released":
            assert len(rows) == 16  # a row per cell
    database_reads.clear()
    assert tables(footfall_result(order)) == expected
    assert database_reads == []


def copies(settings) -> list[Path]:
    """The months' copies (database/table/month/key): not the grid's cells nor the areas' record beside them."""
    return [
        path
        for path in Path(settings.LOCAL_MONTHS_DIR).glob("*/*/*/*")
        if not path.name.startswith(".") and path.parent.parent.name not in ("cells", "areas")
    ]


def test_a_new_policy_is_not_read_from_the_old_policy_copy(city, settings, tmp_path, database_reads):
    first = footfall_result(query())
    copied(settings, tmp_path)
    settings.PRIVACY_K = 40  # the city's busiest cells only
    releases_build()
    caches_clear()
    database_reads.clear()

    second = tables(footfall_result(query()))

    assert second["privacy"]["cell_hours_released"] < first["privacy"]["cell_hours_released"]
    assert database_reads


def test_retention_deletes_the_copies_of_the_months_it_drops(city, settings, tmp_path):
    april = dt.datetime(2026, 4, 2, tzinfo=UTC)
    grid.load_totals(
        tmp_path / "april.csv", cells=[(0, 0)], start=april, end=april + dt.timedelta(hours=2), visits=lambda *_: 9
    )
    copied(settings, tmp_path)
    assert {path.parent.name for path in copies(settings)} == {"2026-03", "2026-04"}

    aggregates_retain(before=dt.datetime(2026, 4, 1, tzinfo=UTC))
    caches_clear()

    # March, and April too: its day rollup lost the days that began in March (UTC).
    assert copies(settings) == []
    assert footfall_result(query())["privacy"]["cell_hours_released"] == 0
    local_months.write()
    assert {path.parent.name for path in copies(settings)} == {"2026-04"}


def test_the_copy_holds_the_recent_months_only(city, settings, tmp_path):
    may = dt.datetime(2026, 5, 4, tzinfo=UTC)
    grid.load_totals(
        tmp_path / "may.csv", cells=[(0, 0)], start=may, end=may + dt.timedelta(hours=2), visits=lambda *_: 9
    )
    settings.LOCAL_MONTHS, settings.LOCAL_DAY_MONTHS = 2, 3

    copied(settings, tmp_path)

    # The presence's two months of hours to its newest data (April: nothing in it), three of days.
    months = sorted(path.parent.name for path in copies(settings))
    assert months == ["2026-03", "2026-04", "2026-04", "2026-05", "2026-05"]


def test_a_release_queues_the_copy_and_its_warm_up_writes_it(city, settings, tmp_path, monkeypatch):
    settings.LOCAL_MONTHS_DIR = str(tmp_path / "local-months")
    settings.SHARED_MONTHS_URL = ""  # no warm-up of areas: the copy alone is reason to queue
    queued = []
    monkeypatch.setattr("marketplace.tasks.warm_ordered_areas.apply_async", lambda args, **kwargs: queued.extend(args))
    release = insights.models.Release.objects.latest("pk")

    warmup.release_warm_up_queue(release=release)
    assert queued == [release.pk]
    assert copies(settings) == []

    warm_ordered_areas(release.pk)
    assert {path.parent.name for path in copies(settings)} == {"2026-03"}


@pytest.fixture
def cell_statements(monkeypatch) -> list:
    """The spans whose grid cells a report reads from PostgreSQL, from here on."""
    sent = []
    read = insights.areas.cells_in_span

    def counted(*span):
        sent.append(span)
        return read(*span)

    monkeypatch.setattr(insights.areas, "cells_in_span", counted)
    return sent


def test_a_new_area_is_weighed_over_the_node_copy_of_the_grid(city, settings, tmp_path, cell_statements):
    expected = from_database(settings, footfall_result, query())
    cell_statements.clear()
    copied(settings, tmp_path)

    assert tables(footfall_result(query())) == expected
    assert cell_statements == []


def test_cells_a_release_adds_are_under_a_new_area_before_the_copy_is_written(
    city, settings, tmp_path, cell_statements
):
    copied(settings, tmp_path)
    # A cell just outside the city's 4 x 4 block, under an area over both.
    grid.load_totals(
        tmp_path / "more.csv", cells=[(4, 4)], start=CITY_START, end=CITY_START + DAY, visits=lambda *_: 50
    )
    block = MultiPolygon(grid.square(0, 0, 5, 5), srid=4326)
    caches_clear()
    cell_statements.clear()

    cells = {cell["cell"] for cell in tables(footfall_result(query(block)))["cells"]}

    assert grid.code(4, 4) in cells
    assert cell_statements  # the copy of the grid is of the release before


def test_a_copy_that_cannot_be_written_leaves_reports_to_the_database(city, settings, tmp_path, monkeypatch, caplog):
    expected = from_database(settings, footfall_result, query())

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np.lib.format, "open_memmap", full)
    monkeypatch.setattr(np, "save", full)

    assert copied(settings, tmp_path) == []
    assert copies(settings) == []
    assert "No space left on device" in caplog.text
    assert tables(footfall_result(query())) == expected
