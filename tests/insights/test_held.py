"""What a report worker keeps between reports (the weighed areas, the decoded packed months, the
catalogue of releases) gives the numbers of a worker that keeps nothing, and is never stale: a
new release, a new policy, the grid gaining cells or retention is seen by the next report."""

import datetime as dt
import sys
from dataclasses import replace

import numpy as np
import pytest
from django.contrib.gis.geos import MultiPolygon
from footfall_kernels import copied_sums, weighted_sums

import insights.areas
import insights.held
import insights.summed
import insights.sums
from insights.areas import AREAS
from insights.catalogue import catalogue
from insights.held import Month
from insights.kinds import DWELL_BANDS
from insights.local_months import Copy
from insights.memo import ByteLRU
from insights.models import DatasetVersion, Release, RetentionMark
from insights.releases import releases_build
from insights.reports import dwell_result, footfall_result, od_matrix_result
from insights.selectors import current_release_policy, region_names
from insights.services import aggregates_retain
from insights.summed import SUMMED, Grouping, summed_copy, summed_month
from insights.sums import HELD, caches_clear
from tests import grid
from tests.conftest import CITY_END, CITY_START, DWELL_END, DWELL_START
from tests.insights.report_queries import query, tables

UTC = dt.UTC


@pytest.fixture(autouse=True)
def nothing_kept(settings):
    settings.SHARED_MONTHS_URL = ""  # this worker's memory only: the node's is tests/insights/test_shared.py's
    caches_clear()
    yield
    caches_clear()


def no_reads(monkeypatch):
    """From here on, reading packed rows or weighing an area fails the test."""

    def fail(*args, **kwargs):
        raise AssertionError("read from the database")

    monkeypatch.setattr(insights.held, "_fetch", fail)
    monkeypatch.setattr(insights.areas.ReportArea, "__init__", fail)


def test_a_repeated_report_is_computed_from_memory_with_the_same_numbers(city, monkeypatch):
    cold = tables(footfall_result(query()))
    assert len(HELD) == 9 and len(AREAS) == 1  # a month of each of the area's cells

    no_reads(monkeypatch)
    warm = tables(footfall_result(query()))

    assert warm == cold
    assert [row["person_hours"] for row in warm["series"][:2]] == [
        round(sum(share * city[(cell, hour)] for cell, share in SHARES.items()))
        for hour in grid.hours(CITY_START, CITY_START + dt.timedelta(hours=2))
    ]


SHARES = {
    (col, row): (0.5 if col in (0, 2) else 1.0) * (0.5 if row in (0, 2) else 1.0)
    for col in range(3)
    for row in range(3)
}


def test_each_cell_sums_only_the_hours_of_the_period_from_the_month_kept(city, monkeypatch):
    def cells(start_hour: int, end_hour: int) -> dict[str, int]:
        start, end = (CITY_START + dt.timedelta(hours=hour) for hour in (start_hour, end_hour))
        return {row["cell"]: row["person_hours"] for row in footfall_result(query(start=start, end=end))["cells"]}

    def expected(start_hour: int, end_hour: int) -> dict[str, float]:
        hours = grid.hours(CITY_START + dt.timedelta(hours=start_hour), CITY_START + dt.timedelta(hours=end_hour))
        return {grid.code(*cell): share * sum(city[(cell, hour)] for hour in hours) for cell, share in SHARES.items()}

    def near(found: dict[str, int], wanted: dict[str, float]) -> bool:  # a share of a quarter may round either way
        return found.keys() == wanted.keys() and all(abs(found[code] - wanted[code]) <= 0.5 for code in found)

    assert near(cells(5, 9), expected(5, 9))  # part of March, read
    no_reads(monkeypatch)
    assert near(cells(30, 31), expected(30, 31))  # another part of it, from the month kept summed for the area


def test_a_release_of_another_kind_leaves_an_area_s_months_summed_as_they_are(city, request, monkeypatch):
    order = query()
    first = tables(footfall_result(order))
    summed = []
    summed_month = insights.sums.summed_month
    monkeypatch.setattr(
        insights.sums, "summed_month", lambda *args, **kw: summed.append(1) or summed_month(*args, **kw)
    )
    request.getfixturevalue("trips")  # a release of trips: the catalogue's state moves, the area is weighed again

    assert tables(footfall_result(order)) == first
    assert summed == []  # its months summed kept under its cells and shares, which did not change


def test_the_months_kept_give_the_numbers_of_a_read_month_by_month(city, monkeypatch):
    kept = footfall_result(query(granularity="day"))
    monkeypatch.setattr(insights.sums, "ROWS_AT_ONCE", 0)  # the large reads' path: nothing kept
    caches_clear()
    streamed = footfall_result(query(granularity="day"))

    assert len(HELD) == 0
    for name in ("series", "cells"):
        assert list(kept[name]) == list(streamed[name])


def test_dwell_bands_and_od_matrix_zones_are_kept_and_give_the_same_numbers(dwell, trips, monkeypatch):
    zones = region_names(["E", "N", "W"])
    orders = [
        (dwell_result, query(start=DWELL_START, end=DWELL_END)),
        (od_matrix_result, query(geometry=None, start=DWELL_START, end=DWELL_END, regions=zones)),
    ]
    cold = [tables(compute(order)) for compute, order in orders]

    no_reads(monkeypatch)
    assert [tables(compute(order)) for compute, order in orders] == cold
    assert {row["dwell_band"] for row in cold[0]["segments"]} == set(DWELL_BANDS) - {"*"}
    assert cold[1]["matrix"][0][0] is not None


def test_a_new_release_of_a_month_kept_is_read_by_the_next_report(city, tmp_path):
    later = dt.datetime(2026, 3, 31, 22, tzinfo=UTC)
    before = footfall_result(query(end=later + dt.timedelta(hours=2)))
    assert [row["person_hours"] for row in before["series"]][-2:] == [None, None]

    # The same month's next hours, in a version of their own
    grid.load_totals(
        tmp_path / "later.csv", cells=[(1, 1)], start=later, end=later + dt.timedelta(hours=2), visits=lambda *_: 40
    )
    after = footfall_result(query(end=later + dt.timedelta(hours=2)))

    assert [row["person_hours"] for row in after["series"]][-2:] == [40, 40]
    assert list(after["series"])[:-2] == list(before["series"])[:-2]
    assert [source["dataset_version"] for source in after["sources"]] == list(
        DatasetVersion.objects.order_by("pk").values_list("pk", flat=True)
    )


def test_a_new_policy_is_read_by_the_next_report(city, settings):
    first = footfall_result(query())
    settings.PRIVACY_K = 40  # the city's busiest cells only
    releases_build()
    second = footfall_result(query())

    assert second["privacy"]["release_policy"] != first["privacy"]["release_policy"]
    assert second["privacy"]["cell_hours_released"] < first["privacy"]["cell_hours_released"]
    caches_clear()
    assert tables(footfall_result(query())) == tables(second)


def test_the_grid_gaining_cells_is_seen_by_the_next_report(db, tmp_path):
    hours = (CITY_START, CITY_START + dt.timedelta(hours=3))
    grid.load_totals(tmp_path / "west.csv", cells=[(0, 0)], start=hours[0], end=hours[1], visits=lambda *_: 30)
    area = MultiPolygon(grid.square(0, 0, 2, 1), srid=4326)
    assert [row["cell"] for row in footfall_result(query(area, start=hours[0], end=hours[1]))["cells"]] == [
        grid.code(0, 0)
    ]

    grid.load_totals(tmp_path / "east.csv", cells=[(1, 0)], start=hours[0], end=hours[1], visits=lambda *_: 50)
    report = footfall_result(query(area, start=hours[0], end=hours[1]))

    assert [row["cell"] for row in report["cells"]] == [grid.code(0, 0), grid.code(1, 0)]
    assert [row["person_hours"] for row in report["series"]] == [80, 80, 80]


def test_retention_changes_what_the_catalogue_says(city):
    seen = catalogue()
    assert catalogue() is seen  # nothing changed: not read again
    RetentionMark.objects.create(kind="presence", retained_from=CITY_START)

    assert catalogue().state != seen.state
    assert catalogue().retained_from == {"presence": CITY_START}


def test_a_month_dropped_by_retention_is_not_served_from_memory(city, tmp_path):
    april = dt.datetime(2026, 4, 2, tzinfo=UTC)
    grid.load_totals(
        tmp_path / "april.csv", cells=[(0, 0)], start=april, end=april + dt.timedelta(hours=2), visits=lambda *_: 9
    )
    assert footfall_result(query())["privacy"]["cell_hours_released"] > 0  # March, now kept

    aggregates_retain(before=dt.datetime(2026, 4, 1, tzinfo=UTC))

    assert footfall_result(query())["privacy"]["cell_hours_released"] == 0


def test_the_sources_are_the_versions_released_under_the_policy(city, tmp_path):
    grid.load_totals(
        tmp_path / "later.csv", cells=[(0, 0)], start=CITY_END, end=CITY_END + dt.timedelta(days=2), visits=lambda *_: 9
    )
    policy = current_release_policy()
    versions = DatasetVersion.objects.filter(releases__policy=policy, period_start__lt=CITY_END).order_by("pk")

    assert [source["dataset_version"] for source in footfall_result(query())["sources"]] == [
        version.pk for version in versions
    ]
    assert footfall_result(query())["sources"][0]["manifest"] == versions[0].manifest
    assert Release.objects.count() == 2


def test_the_memory_kept_stays_within_its_budget(city, monkeypatch):
    cold = tables(footfall_result(query(granularity="day")))
    held_budget, summed_budget = HELD.bytes // 3, SUMMED.bytes // 3
    monkeypatch.setattr(insights.held, "HELD", ByteLRU(held_budget))
    monkeypatch.setattr(insights.summed, "SUMMED", ByteLRU(summed_budget))

    for _ in range(2):
        assert tables(footfall_result(query(granularity="day"))) == cold
        assert 0 < insights.held.HELD.bytes <= held_budget
        assert insights.summed.SUMMED.bytes <= summed_budget


def test_each_area_month_kept_states_at_least_the_memory_it_takes(dwell):
    dwell_result(query(start=DWELL_START, end=DWELL_END))

    assert len(SUMMED) == 1  # the dwell block's UTC month, its bands and everyone summed for the area
    for key, (entry, stated) in SUMMED._items.items():
        arrays = [entry.groups, entry.value, entry.weight, entry.count, entry.place_value, entry.place_count]
        assert entry.place_value is not None  # dwell lists its cells
        taken = sys.getsizeof(key) + sys.getsizeof(entry) + sum(sys.getsizeof(array) for array in arrays)
        assert taken + 200 <= stated


def test_the_cache_evicts_the_least_recently_used_first():
    cache = ByteLRU(3000)
    for key in "abc":
        cache.put(key, key, 1000)
    cache.get("a")
    cache.put("d", "d", 1000)

    assert [cache.get(key) for key in "abcd"] == ["a", None, "c", "d"]
    assert cache.bytes == 3000
    cache.put("e", "e", 4000)  # larger than the whole budget: not kept
    assert cache.get("e") is None and cache.bytes == 3000


def test_each_month_kept_states_at_least_the_memory_it_takes(dwell):
    dwell_result(query(start=DWELL_START, end=DWELL_END))

    assert len(HELD) == 4  # the dwell block's 4 cells, a UTC month
    for key, (entry, stated) in HELD._items.items():
        assert (entry.values.dtype, entry.counts.dtype) == (np.int32, np.uint8)  # 5 bytes an hour
        arrays = (entry.segment, entry.values, entry.counts)
        # Each array owns its data: its size counts its bytes.
        taken = sys.getsizeof(key) + sys.getsizeof(entry) + sum(sys.getsizeof(array) for array in arrays)
        assert taken + 200 <= stated  # and the ordered dict's node


def expected_sums(group, share, values, counts) -> dict[int, tuple]:
    """Each group's weighted values, weighted counts and counts, summed row by row in numpy."""
    return {
        int(found): (
            (values[group == found] * share[group == found, None]).sum(axis=0),
            (counts[group == found] * share[group == found, None]).sum(axis=0),
            counts[group == found].sum(axis=0),
        )
        for found in np.unique(group[group >= 0])
    }


def assert_summed(summed, expected: dict, *, places_everyone: tuple | None) -> None:
    assert summed.groups.tolist() == sorted(expected)
    for position, group in enumerate(summed.groups):
        value, weight, count = expected[int(group)]
        assert summed.value[position] == pytest.approx(value, rel=1e-15)
        assert summed.weight[position] == pytest.approx(weight, rel=1e-15)
        assert summed.count[position].tolist() == count.tolist()
    if places_everyone is not None:
        place_value, place_count = places_everyone
        assert summed.place_value.tolist() == place_value.tolist()
        assert summed.place_count.tolist() == place_count.tolist()


@pytest.mark.parametrize("dtype", [np.int32, np.int64])  # hours' values, days' sums
def test_rows_read_are_summed_per_group_weighted_by_their_shares(dtype):
    rng = np.random.default_rng(7)
    group = np.array([5, 0, -1, 5, 0, 2, 5])  # -1: not summed
    share = rng.random(7)
    values, counts = rng.integers(2, 90, (7, 5)).astype(dtype), rng.integers(0, 2, (7, 5)).astype(np.uint8)
    segment = np.array([0, 3, 0, 1, 0, 2, 4])
    place = np.array([0, 0, 1, 1, 2, 2, 3])
    month = Month(place=place, segment=segment, values=values, counts=counts)

    summed = summed_month(month, group=group, share=share, places=4)

    everyone_value, everyone_count = np.zeros((4, 5), dtype=dtype), np.zeros((4, 5), dtype=np.uint8)
    everyone_value[place[segment == 0]], everyone_count[place[segment == 0]] = (
        values[segment == 0],
        counts[segment == 0],
    )
    assert_summed(summed, expected_sums(group, share, values, counts), places_everyone=(everyone_value, everyone_count))


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
@pytest.mark.parametrize("stride", [0, 3])  # a group per segment, or per place and segment (zone pairs)
def test_a_month_of_the_node_copy_is_summed_where_its_rows_lie(dtype, stride):
    rng = np.random.default_rng(11)
    # The copy: places 10, 20, 30, 40 (ascending), their rows by segment key.
    copy_place = np.array([10, 20, 30, 40])
    bounds = np.array([0, 3, 4, 7, 9])
    segment = np.array([0, 1, 2, 0, 0, 2, 7, 1, 2])  # key 7: a segment the read does not take
    values = rng.integers(1, 500, (9, 6)).astype(dtype)
    counts = rng.integers(0, 2, (9, 6)).astype(np.uint8)
    copy = Copy(place=copy_place, bounds=bounds, segment=segment, values=values, counts=counts)
    places = np.array([40, 25, 10, 30])  # the area's order; 25 has no rows this month
    shares = rng.random(4)
    grouping = Grouping.of({0: 0, 2: 1, 1: 2}, stride=stride)

    summed = summed_copy(copy, places=places, shares=shares, grouping=grouping, with_places=True)

    # The same rows gathered, as a read from PostgreSQL holds them, summed row by row.
    position = {10: 0, 20: 1, 30: 2, 40: 3}
    rows = [
        (at, row)
        for at, place in enumerate(places)
        if place in position
        for row in range(bounds[position[place]], bounds[position[place] + 1])
    ]
    row_place = np.array([at for at, _ in rows])
    picked = np.array([row for _, row in rows])
    month = Month(place=row_place, segment=segment[picked], values=values[picked], counts=counts[picked])
    group = grouping.of_rows(month)
    assert (group >= 0).sum() == 7  # of the 8 rows of the area's places, all but the one of key 7
    everyone_value, everyone_count = np.zeros((4, 6), dtype=dtype), np.zeros((4, 6), dtype=np.uint8)
    everyone = month.segment == 0
    everyone_value[row_place[everyone]], everyone_count[row_place[everyone]] = (
        month.values[everyone],
        month.counts[everyone],
    )
    expected = expected_sums(group, shares[row_place], month.values, month.counts)
    assert_summed(summed, expected, places_everyone=(everyone_value, everyone_count))
    # As the rows read are summed, to the bit.
    read = summed_month(month, group=group, share=shares[row_place], places=4)
    for part in ("groups", "value", "weight", "count", "place_value", "place_count"):
        assert getattr(summed, part).tolist() == getattr(read, part).tolist()


def test_rows_that_do_not_match_their_sums_are_refused():
    values, counts = np.zeros((3, 4), dtype=np.int32), np.zeros((3, 4), dtype=np.uint8)
    out = [np.zeros((2, 4)) for _ in range(3)]
    rows, groups, shares = np.array([0, 2]), np.array([1, 0]), np.ones(2)

    with pytest.raises(IndexError):  # a row past the month's
        weighted_sums(values, counts, np.array([0, 3]), groups, shares, *out)
    with pytest.raises(IndexError):  # a group past the sums'
        weighted_sums(values, counts, rows, np.array([1, 2]), shares, *out)
    with pytest.raises(ValueError):  # counts of another width
        weighted_sums(values, np.zeros((3, 5), dtype=np.uint8), rows, groups, shares, *out)
    with pytest.raises(ValueError):  # values as floats
        weighted_sums(values.astype(float), counts, rows, groups, shares, *out)
    with pytest.raises(ValueError):  # sums that cannot be written
        weighted_sums(values, counts, rows, groups, shares, out[0], out[1], np.zeros((2, 4))[:, ::2])
    assert not any(part.any() for part in out)


def test_a_copy_or_grouping_that_would_sum_out_of_bounds_is_refused():
    copy = Copy(
        place=np.array([1, 2]),
        bounds=np.array([0, 1, 2]),
        segment=np.array([0, 0]),
        values=np.ones((2, 4), dtype=np.int32),
        counts=np.ones((2, 4), dtype=np.uint8),
    )
    out = [np.zeros((2, 4)) for _ in range(3)] + [np.zeros(2, dtype=np.uint8)]

    def summed(copy=copy, key_group=0, stride=0):
        copied_sums(
            copy.place, copy.bounds, copy.segment, copy.values, copy.counts, np.array([1, 2]), np.ones(2),
            np.array([0]), np.array([key_group]), stride, *out, None, None,
        )  # fmt: skip

    with pytest.raises(IndexError):  # a group past the sums'
        summed(key_group=2)
    with pytest.raises(IndexError):  # the second place's groups past the sums'
        summed(stride=2)
    with pytest.raises(IndexError):  # a stride whose product would overflow (a helper's review)
        summed(stride=2**62)
    with pytest.raises(IndexError):
        summed(key_group=2**63 - 1)
    with pytest.raises(ValueError):  # bounds past the copy's rows
        summed(copy=replace(copy, bounds=np.array([0, 1, 3])))
    with pytest.raises(ValueError):  # places out of order: the search would miss them
        summed(copy=replace(copy, place=np.array([2, 1])))
    assert not any(part.any() for part in out)
