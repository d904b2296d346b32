"""The attacks of docs/privacy.md, played through the public API against the village, where a
known small group of 3 people hides (tests/privacy/conftest.py). Each test proves the group
cannot be learned; `--without-defence NAME` switches the defence off to watch it fail."""

import statistics

import pytest
from django.contrib.gis.geos import MultiPolygon, Polygon
from django.db import ProgrammingError, transaction

from marketplace.models import Release, Report
from tests import grid
from tests.errors import assert_error
from tests.privacy.conftest import body, leaks, rest_leaks

K = 10
BLOCK_AREA = grid.square(0, 0, 4, 4)
HAMLET_AREA = grid.square(6, 0, 3, 2)


def block_without_quiet_cell() -> MultiPolygon:
    """The block less the cell of the small group: differs from it by one cell, 0.0625 km²."""
    east, north, cell = grid.ORIGIN_EAST, grid.ORIGIN_NORTH, grid.CELL
    outline = Polygon(
        (
            (east, north),
            (east + 4 * cell, north),
            (east + 4 * cell, north + 3 * cell),
            (east + 3 * cell, north + 3 * cell),
            (east + 3 * cell, north + 4 * cell),
            (east, north + 4 * cell),
            (east, north),
        ),
        srid=3035,
    )
    outline.transform(4326)
    return outline


def test_a_value_under_k_is_never_released(village, order):
    _, report = order(body(BLOCK_AREA, granularity="hour", breakdowns=["age_band"]))

    group = [
        row
        for row in report["result"]["segments"]
        if row["age_band"] == "65+" and row["start"].startswith("2026-03-28T1") and row["hours"] == 1
    ]
    assert group and all(row["visits"] is None and row["suppressed_reason"] == "below_k" for row in group)
    assert leaks(report["result"], K) == []


def test_a_breakdown_cannot_be_subtracted_from_its_total(village, order):
    _, report = order(body(BLOCK_AREA, breakdowns=["age_band"]))

    day = next(
        row for row in report["result"]["segments"] if row["start"][:10] == "2026-03-28" and row["age_band"] == "65+"
    )
    assert day["visits"] is None  # the group: 3 people for 2 hours
    assert leaks(report["result"], K) == []


def test_a_cell_cannot_be_subtracted_from_the_totals(village, order):
    _, report = order(body(BLOCK_AREA))

    quiet = next(cell for cell in report["result"]["cells"] if cell["cell"] == grid.code(3, 3))
    assert quiet["visits"] is None and quiet["suppressed_reason"] == "below_k"
    assert leaks(report["result"], K) == []


def test_nearly_identical_polygons_cannot_be_subtracted(village, order):
    _, whole = order(body(BLOCK_AREA))
    response, less = order(body(block_without_quiet_cell()))

    if less is None:
        assert_error(response, 400, "area_too_similar", attr="geometry")
        assert Report.objects.count() == 1
    else:  # the defence is off: subtracting the two gives the small group away
        for mine, theirs in zip(whole["result"]["series"], less["result"]["series"], strict=True):
            difference = mine["visits"] - theirs["visits"]
            assert not 0 < difference < K, f"{mine['start']}: {difference} people in the sliver"


def test_two_users_of_one_tenant_are_audited_together(village, order, tenant, client_for):
    _, whole = order(body(BLOCK_AREA))
    colleague = client_for(tenant)  # another API key of the same organisation
    response, less = order(body(block_without_quiet_cell()), client=colleague)

    assert less is None, "the colleague's report over the sliver was released"
    assert_error(response, 400, "area_too_similar", attr="geometry")


def test_repeating_a_question_gains_nothing(village, order, settings):
    settings.PRIVACY_NOISE_SCALE = 2.0
    answers = []
    for _ in range(4):
        _, report = order(body(BLOCK_AREA))
        answers.append([row["visits"] for row in report["result"]["series"]])

    assert all(answer == answers[0] for answer in answers), "the same question got different noise"
    averaged = [statistics.mean(day) for day in zip(*answers, strict=True)]
    assert averaged == answers[0]


def test_slicing_time_finer_cannot_recompute_a_withheld_hour(village, order):
    _, days = order(body(HAMLET_AREA))
    _, hours = order(
        body(HAMLET_AREA, granularity="hour", start="2026-03-28T00:00:00+01:00", end="2026-03-30T00:00:00+02:00")
    )

    found = []
    for day in days["result"]["series"]:
        inside = [hour for hour in hours["result"]["series"] if hour["start"][:10] == day["start"][:10]]
        if len(inside) == day["hours"]:
            found += rest_leaks(f"day {day['start'][:10]} minus its released hours", [day], inside, K)
    assert found == []
    assert leaks(hours["result"], K) == []


def test_an_area_under_the_minimum_is_refused(village, order):
    response, report = order(body(grid.square(3, 3, 1, 1)))

    assert report is None, "a report over one cell was released"
    assert_error(response, 400, "area_too_small", attr="geometry")


def test_the_query_budget_caps_overlapping_orders(village, order, settings):
    settings.PRIVACY_QUERY_BUDGET = 3
    remaining = []
    for _ in range(3):
        _, report = order(body(BLOCK_AREA))
        remaining.append(report["query_budget_remaining"])

    response, fourth = order(body(grid.square(1, 1, 3, 3)))  # overlaps the block

    assert remaining == [2, 1, 0]
    assert fourth is None, "a fourth overlapping order went through"
    assert_error(response, 403, "query_budget_exhausted")


def test_every_release_is_logged(village, order, tenant):
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
