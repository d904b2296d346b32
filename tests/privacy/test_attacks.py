"""The attacks of docs/privacy.md, played through the public API against the village, where a
known small group hides (tests/privacy/conftest.py). Each designed set of orders is solved
together; the test shows it pins down nothing but published values, and never the group.
`--without-defence NAME` switches the defence off to watch its attack succeed."""

import itertools
import statistics

import pytest
from django.contrib.gis.geos import Polygon
from django.db import ProgrammingError, transaction

from insights.releases import releases_build
from marketplace.models import Release
from tests import grid
from tests.errors import assert_error
from tests.factories import granted_tenant
from tests.privacy.conftest import (
    BLOCK,
    BUSY_CELL,
    DAY_1,
    DAY_2,
    DAY_3,
    EMPTY_HOUR,
    GROUP_HOURS,
    HAMLETS,
    QUIET_CELL,
    SMALL_GROUP,
    Equations,
    K,
    add_series,
    assert_nothing_beyond_the_release,
    block_less,
    body,
    cell_shares,
    everyone,
    group_keys,
    hamlet_area,
    release_table,
    report_hours,
    union,
)

BLOCK_AREA = grid.square(0, 0, 4, 4)
QUIET_STRIP = grid.square(2, 1, 2, 3)  # the quiet cell and five busy neighbours
BUSY_CORNER = grid.square(0, 0, 2, 2)  # the busy cell and three neighbours
GROUP_DAY = {"start": DAY_1, "end": DAY_2}


def numbers(result: dict, metric: str = "person_hours") -> list:
    return [row[metric] for part in ("series", "segments", "cells") for row in result.get(part, [])]


def test_a_value_under_k_is_never_released(village, order):
    _, report = order(body(BLOCK_AREA, granularity="hour", breakdowns=["age_band"], **GROUP_DAY))
    result = report["result"]

    group = [row for row in result["segments"] if row["age_band"] == "65+" and row["start"][11:13] in ("11", "12")]
    assert len(group) == 2
    assert all(row["person_hours"] is None and row["suppressed_reason"] == "not_released" for row in group)
    # A cell with no published value is in no report, as if the operator had never counted it.
    assert grid.code(*QUIET_CELL) not in [cell["cell"] for cell in result["cells"]]
    assert [number for number in numbers(result) if number is not None and number < K] == []
    assert all(release_table().get(key) is None for key in group_keys())


def test_a_breakdown_cannot_be_subtracted_from_its_total(village, order):
    _, report = order(body(BUSY_CORNER, granularity="hour", breakdowns=["age_band"], **GROUP_DAY))
    result = report["result"]

    rests = {}
    for total in result["series"]:
        parts = [row for row in result["segments"] if row["start"] == total["start"]]
        rests[total["start"]] = total["person_hours"] - sum(row["person_hours"] or 0 for row in parts)
    # Everyone minus the published age bands is what the withheld bands hold: nobody, or k or more.
    assert all(rest == 0 or rest >= K for rest in rests.values()), rests
    group_hours = [start for start in rests if start[11:13] in ("11", "12")]
    assert [rests[start] for start in group_hours] == [15 + SMALL_GROUP] * 2  # the 35-44 of the busy cell hide them
    for hour in GROUP_HOURS:
        assert release_table().get(everyone(BUSY_CELL, hour, age="35-44")) is None


def test_a_cell_cannot_be_subtracted_from_the_totals(village, order):
    _, report = order(body(BLOCK_AREA))
    result = report["result"]

    cells = {cell["cell"]: cell["person_hours"] for cell in result["cells"]}
    assert grid.code(*QUIET_CELL) not in cells
    assert sum(row["person_hours"] for row in result["series"]) == sum(value or 0 for value in cells.values())
    assert all(value is None or value >= K for value in cells.values())


def test_unions_of_far_apart_hamlets_in_every_combination_pin_only_published_values(village, order):
    """Every union of the hamlets (MultiPolygons of cells up to 10 km apart), each a different
    area: together they give each hamlet's hours, which are the published values."""
    equations = Equations()
    for size in range(1, len(HAMLETS) + 1):
        for combination in itertools.combinations(range(len(HAMLETS)), size):
            area = union(*(hamlet_area(index) for index in combination))
            response, report = order(body(area, granularity="hour", **GROUP_DAY))
            if report is None:  # product policy, not the privacy defence: an area under the minimum
                assert response.json()["code"] in ("area_too_small", "area_too_few_cells"), response.content
                continue
            add_series(equations, report["result"])

    solved = equations.solve()
    assert {key[0] for key in solved} == {grid.cell_id_of(hamlet) for hamlet in HAMLETS}, "each hamlet is pinned"
    assert everyone(HAMLETS[0], EMPTY_HOUR) in solved, "the unions pin the hour the group is alone"
    assert_nothing_beyond_the_release(solved)


def test_overlapping_time_windows_pin_only_published_hours(village, order):
    """Hourly windows of one and two hours shifted hour by hour, and daily windows, over one
    small area around the quiet cell, with their per-cell sums: solved together, they give each
    published cell-hour, and nothing of the quiet cell, which is in no report."""
    equations = Equations()
    starts = [f"2026-03-28T{hour:02d}:00:00+01:00" for hour in range(9, 14)]
    for start, hours in itertools.product(range(len(starts)), (1, 2)):
        end = f"2026-03-28T{9 + start + hours:02d}:00:00+01:00"
        _, report = order(body(QUIET_STRIP, granularity="hour", start=starts[start], end=end))
        add_series(equations, report["result"])
    for start, end in ((DAY_1, DAY_2), (DAY_2, DAY_3), (DAY_1, DAY_3)):
        _, report = order(body(QUIET_STRIP, start=start, end=end))
        add_series(equations, report["result"])

    solved = equations.solve()
    for hour in GROUP_HOURS:
        assert everyone((2, 3), hour) in solved, "the windows pin each published cell-hour"
        assert everyone(QUIET_CELL, hour) not in solved
    assert_nothing_beyond_the_release(solved)


def test_colluding_tenants_pooling_slivers_and_rings_pin_only_published_values(village, order, client_for):
    """Four organisations: the block, the block less the busy cell beside the quiet one, a ring
    around the block's middle, and the block less a 50 m sliver of that cell; pooled and solved
    together they pin that cell's hours, which are published values, and nothing of the quiet
    cell, which is in no report."""
    areas = [BLOCK_AREA, block_less((2, 3, 1, 1)), block_less((1, 1, 2, 2)), block_less((2.8, 3, 0.2, 1))]
    clients = [None] + [client_for(granted_tenant()) for _ in areas[1:]]
    equations = Equations()
    for area, client in zip(areas, clients, strict=True):
        _, report = order(body(area, granularity="hour", **GROUP_DAY), client=client)
        assert report is not None
        add_series(equations, report["result"])

    solved = equations.solve()
    for hour in GROUP_HOURS:
        assert everyone((2, 3), hour) in solved, "pooled, the orders pin the cell they differ by"
        assert everyone(QUIET_CELL, hour) not in solved, "the quiet cell is in no report"
    # The sliver's cut cells are counted by their share: its sums are rounded, hence the tolerance.
    assert_nothing_beyond_the_release(solved, tolerance=1.0)


def test_every_area_of_a_comparison_gives_only_published_values(village, order, tenant):
    compared = block_less((3, 3, 1, 1))
    _, report = order(
        body(BLOCK_AREA, product="compare", granularity="hour", compare_geometry=grid.geojson(compared), **GROUP_DAY)
    )
    result = report["result"]

    equations = Equations()
    add_series(equations, result, cell_shares(BLOCK))
    others = cell_shares([cell for cell in BLOCK if cell != QUIET_CELL])
    add_series(equations, result, others, metric="comparison_person_hours", start="comparison_start")
    solved = equations.solve()
    for hour in GROUP_HOURS:
        assert everyone(QUIET_CELL, hour) in solved, "the two areas of the comparison pin the quiet cell"
    assert_nothing_beyond_the_release(solved)
    assert all(row["change"] == 0 for row in result["series"])


def test_a_redrawn_area_gets_the_identical_answer(settings, db, order, request):
    """Noise is seeded by what a value counts, never by the area: a 0.2 mm redraw is the same question."""
    settings.PRIVACY_NOISE_SCALE = 2.0
    request.getfixturevalue("village")
    east, north, cell = grid.ORIGIN_EAST, grid.ORIGIN_NORTH, grid.CELL
    redrawn = Polygon.from_bbox((east + 0.0002, north + 0.0002, east + 4 * cell + 0.0002, north + 4 * cell - 0.0002))
    redrawn.srid = 3035
    redrawn.transform(4326)

    _, first = order(body(BLOCK_AREA, granularity="hour", **GROUP_DAY))
    _, second = order(body(redrawn, granularity="hour", **GROUP_DAY))

    assert numbers(second["result"]) == numbers(first["result"])
    assert [cell["cell"] for cell in second["result"]["cells"]] == [cell["cell"] for cell in first["result"]["cells"]]
    published = release_table()
    for row in first["result"]["series"]:
        (hour,) = report_hours(row["start"], row["hours"])
        assert row["person_hours"] == sum(published.get(everyone(cell, hour), 0) for cell in BLOCK)


def test_a_new_release_of_the_same_data_draws_the_same_noise(settings, db, order, request):
    """Each change of policy builds a new release. Were its noise drawn afresh, the answers of
    the releases would average the noise away; seeded by what each value counts, the same value
    gets the same noise in every release."""
    settings.PRIVACY_NOISE_SCALE = 3.0
    request.getfixturevalue("village")
    answers = []
    for k in (K, K + 1, K + 2, K + 3):
        settings.PRIVACY_K = k
        releases_build()
        _, report = order(body(BUSY_CORNER, granularity="hour", **GROUP_DAY))
        assert report["result"]["privacy"]["k"] == k
        answers.append([row["person_hours"] for row in report["result"]["series"]])

    assert all(answer == answers[0] for answer in answers), "the releases drew different noise"
    averaged = [statistics.mean(hour) for hour in zip(*answers, strict=True)]
    assert averaged == answers[0]


def test_an_area_under_the_minimum_is_refused(village, order):
    response, report = order(body(grid.square(*QUIET_CELL, 1, 1)))

    assert report is None, "a report over one cell was released"
    assert_error(response, 400, "area_too_small", attr="geometry")
    response, report = order(body(union(hamlet_area(0), hamlet_area(1))))
    assert report is None, "a report over two cells was released"


def test_the_fair_use_quota_counts_every_area_of_an_order(village, order, settings, tenant):
    settings.PRIVACY_QUERY_BUDGET = 3
    far_away = union(*(hamlet_area(index) for index in range(4)))
    remaining = []
    for _ in range(3):
        _, report = order(body(far_away, product="compare", compare_geometry=grid.geojson(BLOCK_AREA)))
        remaining.append(report["query_budget_remaining"])

    response, fourth = order(body(grid.square(1, 1, 3, 3)))  # overlaps only the comparison areas

    assert fourth is None, "a fourth order over the compared area went through"
    assert_error(response, 403, "query_budget_exhausted")
    assert remaining == [2, 1, 0]


def test_every_report_is_logged(village, order, tenant):
    _, report = order(body(BLOCK_AREA))

    release = Release.objects.get(report_id=report["id"])
    assert (release.tenant, release.product, release.dataset_version) == (tenant, "footfall", report["dataset_version"])
    assert release.parameters["privacy"]["k"] == K


def test_the_release_log_cannot_be_changed_or_deleted(village, order):
    _, report = order(body(BLOCK_AREA))
    release = Release.objects.get(report_id=report["id"])

    for change in (lambda: Release.objects.filter(pk=release.pk).update(result_sha256="0" * 64), release.delete):
        with pytest.raises(ProgrammingError, match="append-only"), transaction.atomic():
            change()
    assert Release.objects.get(pk=release.pk).result_sha256 == release.result_sha256
