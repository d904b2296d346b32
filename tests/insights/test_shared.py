"""The decoded months a node's report workers share through Redis (insights/shared.py): a worker
that never read an area reads its months from there with the numbers of one that reads
PostgreSQL; a new release for a month, a new policy and retention (the ways released rows
change) are seen by such a worker; the bytes written are bounded; and Redis down or silent
leaves reports as they are without it."""

import datetime as dt
import shutil
import socket
import subprocess
import time
import uuid

import pytest
import redis
from django.contrib.gis.geos import MultiPolygon
from django.db.models.functions import Now

import insights.areas
import insights.held
import insights.summed
import insights.sums
from insights import local_months, shared
from insights.models import Release
from insights.releases import releases_build
from insights.reports import dwell_result, footfall_result, od_matrix_result
from insights.selectors import cells_in_span, region_names
from insights.services import aggregates_retain
from insights.sums import caches_clear
from tests import grid
from tests.conftest import DWELL_END, DWELL_START
from tests.insights.report_queries import BLOCK, query, tables
from tests.shared_months import own_prefix, reads_counted  # noqa: F401 (own_prefix: an autouse fixture)

UTC = dt.UTC


def values(settings, *, flush: bool = True) -> list[bytes]:
    """The names of the values shared under this test's prefix: place-months and area-months,
    once the writes handed over so far are done (flush)."""
    return [name for name in shared_names(settings, flush=flush) if b":area:" not in name]


def areas(settings) -> list[bytes]:
    """The names of the areas weighed shared under this test's prefix."""
    return [name for name in shared_names(settings) if b":area:" in name]


def shared_names(settings, *, flush: bool = True) -> list[bytes]:
    if flush:
        shared.flush()
    client = redis.Redis.from_url(settings.SHARED_MONTHS_URL)
    return [name for name in client.scan_iter(match=f"{settings.SHARED_MONTHS_PREFIX}:*") if b":written:" not in name]


def area_months(settings) -> list[bytes]:
    return [name for name in values(settings) if b":summed:" in name]


def from_database(settings, compute, order) -> dict:
    """The result of a worker that shares nothing."""
    url, settings.SHARED_MONTHS_URL = settings.SHARED_MONTHS_URL, ""
    caches_clear()
    result = tables(compute(order))
    settings.SHARED_MONTHS_URL = url
    return result


# Over the same cells as BLOCK, with other shares: its months summed are not shared, its place-months are.
SHIFTED = MultiPolygon(grid.square(0.25, 0.25, 2.5, 2.5), srid=4326)


def test_a_worker_that_never_read_the_area_reads_its_months_from_the_node(city, settings, monkeypatch):
    shifted = from_database(settings, footfall_result, query(SHIFTED))
    caches_clear()
    first = tables(footfall_result(query()))
    assert len(values(settings)) == 10  # a month of each of the area's 9 cells, and the area's month summed

    fetched = reads_counted(monkeypatch)
    caches_clear()  # another worker
    assert tables(footfall_result(query())) == first
    caches_clear()
    assert tables(footfall_result(query(SHIFTED))) == shifted  # the same cells: their months are shared
    assert fetched == []

    client = redis.Redis.from_url(settings.SHARED_MONTHS_URL)
    assert all(0 < client.ttl(name) <= settings.SHARED_MONTHS_TTL_SECONDS for name in values(settings))


def a_release_adds_a_cell_under_the_area(tmp_path) -> None:
    """A load whose release build adds a cell under BLOCK: a new state of the releases."""
    grid.load_totals(
        tmp_path / "new-cell.csv",
        cells=[(2, 2)],
        start=dt.datetime(2026, 3, 31, 22, tzinfo=UTC),
        end=dt.datetime(2026, 4, 1, tzinfo=UTC),
        visits=lambda *_: 40,
    )


def test_a_worker_reads_an_area_another_weighed_from_the_node(city, tmp_path, settings, monkeypatch):
    first = tables(footfall_result(query()))
    assert len(areas(settings)) == 1
    spans = []
    monkeypatch.setattr(insights.areas, "cells_in_span", lambda *span: spans.append(span) or cells_in_span(*span))

    caches_clear()  # another worker
    assert tables(footfall_result(query())) == first
    assert spans == []

    # A release build may add cells under the area: the areas shared are those of the releases' state.
    a_release_adds_a_cell_under_the_area(tmp_path)
    caches_clear()
    footfall_result(query())
    assert len(spans) == 1


def test_dwell_bands_and_day_rows_shared_give_the_numbers_of_the_database(dwell, settings, monkeypatch):
    orders = [query(start=DWELL_START, end=DWELL_END), query(start=DWELL_START, end=DWELL_END, granularity="day")]
    expected = [from_database(settings, dwell_result, order) for order in orders]
    caches_clear()
    [dwell_result(order) for order in orders]

    fetched = reads_counted(monkeypatch)
    for order, result in zip(orders, expected, strict=True):
        caches_clear()
        assert tables(dwell_result(order)) == result
        monkeypatch.setattr(insights.summed, "kept", lambda key: insights.summed.SUMMED.get(key))  # place-months
        caches_clear()
        assert tables(dwell_result(order)) == result
        monkeypatch.undo()
        fetched = reads_counted(monkeypatch)
    assert fetched == []


@pytest.mark.parametrize("area", [BLOCK, SHIFTED], ids=["area-months", "place-months"])
def test_a_new_release_of_a_month_shared_is_read_by_a_new_worker(city, tmp_path, settings, area):
    later = dt.datetime(2026, 3, 31, 22, tzinfo=UTC)
    before = footfall_result(query(end=later + dt.timedelta(hours=2)))
    assert [row["person_hours"] for row in before["series"]][-2:] == [None, None]

    # The same month's next hours, in a version of their own
    grid.load_totals(
        tmp_path / "later.csv", cells=[(1, 1)], start=later, end=later + dt.timedelta(hours=2), visits=lambda *_: 40
    )
    caches_clear()
    after = tables(footfall_result(query(area, end=later + dt.timedelta(hours=2))))

    assert [row["person_hours"] for row in after["series"]][-2:] == [40, 40]
    assert after == from_database(settings, footfall_result, query(area, end=later + dt.timedelta(hours=2)))


@pytest.mark.parametrize("area", [BLOCK, SHIFTED], ids=["area-months", "place-months"])
def test_a_new_policy_is_read_by_a_new_worker(city, settings, area):
    first = footfall_result(query())
    settings.PRIVACY_K = 40  # the city's busiest cells only
    releases_build()
    caches_clear()
    second = tables(footfall_result(query(area)))

    assert second["privacy"]["cell_hours_released"] < first["privacy"]["cell_hours_released"]
    assert second == from_database(settings, footfall_result, query(area))


@pytest.mark.parametrize("area", [BLOCK, SHIFTED], ids=["area-months", "place-months"])
def test_a_release_built_again_under_an_id_given_before_is_read_anew(city, settings, monkeypatch, area):
    """A restore of the database to an earlier point sets its sequences back: a release built
    after it may get the id of one built before, which workers and Redis may still hold."""
    footfall_result(query())  # kept in this worker, and shared
    footfall_result(query(SHIFTED))
    shared.flush()
    Release.objects.update(built_at=Now())  # the same ids, built at another time
    fetched = reads_counted(monkeypatch)

    footfall_result(query(area))  # nothing this worker kept, nor anything shared, is taken for the new release
    assert fetched
    fetched.clear()
    caches_clear()  # another worker: what that read is shared under the new release
    footfall_result(query(area))
    assert fetched == []


@pytest.mark.parametrize(
    "area", [grid.square(0, 0, 1, 1), grid.square(0, 0, 1, 0.8)], ids=["area-months", "place-months"]
)
def test_days_cut_by_retention_are_not_served_to_a_new_worker(db, tmp_path, area):
    # Berlin's 1 April began at 22:00 UTC on 31 March: its day rollup holds March hours.
    hours = (dt.datetime(2026, 3, 31, 20, tzinfo=UTC), dt.datetime(2026, 4, 1, 4, tzinfo=UTC))
    grid.load_totals(tmp_path / "edge.csv", cells=[(0, 0)], start=hours[0], end=hours[1], visits=lambda *_: 30)
    cell = MultiPolygon(grid.square(0, 0, 1, 1), srid=4326)
    days = {"start": dt.datetime(2026, 3, 31, 22, tzinfo=UTC), "end": dt.datetime(2026, 4, 1, 22, tzinfo=UTC)}
    assert [row["person_hours"] for row in footfall_result(query(cell, granularity="day", **days))["series"]] == [180]

    aggregates_retain(before=dt.datetime(2026, 4, 1, tzinfo=UTC))  # March, and the days that began in it
    caches_clear()
    area = MultiPolygon(area, srid=4326)

    assert [row["person_hours"] for row in footfall_result(query(area, granularity="day", **days))["series"]] == [None]


@pytest.mark.parametrize("area", [BLOCK, SHIFTED], ids=["area-months", "place-months"])
def test_a_month_dropped_by_retention_is_not_served_to_a_new_worker(city, tmp_path, area):
    april = dt.datetime(2026, 4, 2, tzinfo=UTC)
    grid.load_totals(
        tmp_path / "april.csv", cells=[(0, 0)], start=april, end=april + dt.timedelta(hours=2), visits=lambda *_: 9
    )
    assert footfall_result(query())["privacy"]["cell_hours_released"] > 0

    aggregates_retain(before=dt.datetime(2026, 4, 1, tzinfo=UTC))
    caches_clear()

    assert footfall_result(query(area))["privacy"]["cell_hours_released"] == 0


def test_retention_deletes_the_shared_copies_of_what_it_dropped_whatever_their_ttl(city, settings):
    with shared.kept_longer(ttl=LONGER, budget=2**20):  # a warm-up's, meant to live for days
        footfall_result(query())  # March: the area and its month summed, its place-months
        footfall_result(query(granularity="day"))  # the day rollup's March and April (Berlin's 1 April)
    march = [name for name in shared_names(settings) if b":2026-03-01" in name]
    assert len(march) >= 10 and areas(settings)

    aggregates_retain(before=dt.datetime(2026, 4, 1, tzinfo=UTC))  # March, and the days that began in it

    assert [name for name in shared_names(settings) if b":2026-03-01" in name] == []
    assert areas(settings)  # no values: left to their TTL


def test_a_window_writes_its_budget_at_most(city, settings):
    footfall_result(query())
    shared.flush()
    client = redis.Redis.from_url(settings.SHARED_MONTHS_URL)
    (counter,) = client.scan_iter(match=f"{settings.SHARED_MONTHS_PREFIX}:written:*")
    assert 0 < client.ttl(counter) <= 2 * settings.SHARED_MONTHS_TTL_SECONDS
    needed = int(client.get(counter))  # the area's nine place-months, then its month summed

    for budget, written in ((needed, 10), (needed - 1, 9), (1, 0)):
        settings.SHARED_MONTHS_PREFIX = f"test-shared-months-{uuid.uuid4().hex}"  # a new window's counter
        settings.SHARED_MONTHS_BYTES = budget
        caches_clear()
        footfall_result(query())
        assert len(values(settings)) == written


def test_forgetting_the_shared_months_gives_their_bytes_back_to_the_window(city, settings):
    footfall_result(query())
    shared.flush()
    client = redis.Redis.from_url(settings.SHARED_MONTHS_URL)
    (counter,) = client.scan_iter(match=f"{settings.SHARED_MONTHS_PREFIX}:written:*")
    settings.SHARED_MONTHS_BYTES = int(client.get(counter))  # this window's budget is spent

    shared.forget_all()
    assert (values(settings), int(client.get(counter))) == ([], 0)
    caches_clear()
    footfall_result(query())
    assert len(values(settings)) == 10


def test_a_report_leaves_its_writes_for_later_and_drops_them_beyond_the_room(city, settings):
    """A buyer does not wait for Redis: the worker writes once the report is final (flush)."""
    first = tables(footfall_result(query()))
    assert values(settings, flush=False) == []
    assert len(values(settings)) == 10  # flushed: the cells' 9 place-months and the area's month summed
    caches_clear()
    assert tables(footfall_result(query())) == first

    for _ in range(shared.PENDING_WRITES + 3):  # another area over the same cells: its month summed, each time
        insights.summed.SUMMED.clear()
        footfall_result(query(SHIFTED))
    assert len(shared._pending) == shared.PENDING_WRITES
    assert len(values(settings)) == 11


LONGER = 8 * 24 * 3600  # the warm-up's TTL (marketplace/services/warmup.py)


def ttls(settings) -> dict[bytes, int]:
    client = redis.Redis.from_url(settings.SHARED_MONTHS_URL)
    return {name: client.ttl(name) for name in shared_names(settings)}


def counted(settings, window: str) -> int:
    """The bytes counted in this test's windows: "written:[0-9]*", the entries', or
    "written:longer:*", those kept longer."""
    client = redis.Redis.from_url(settings.SHARED_MONTHS_URL)
    return sum(int(client.get(name)) for name in client.scan_iter(match=f"{settings.SHARED_MONTHS_PREFIX}:{window}"))


def test_entries_kept_longer_live_as_long_and_count_in_a_window_of_their_own(city, settings):
    first = tables(footfall_result(query()))  # a worker's report: its entries live a day
    day = settings.SHARED_MONTHS_TTL_SECONDS
    before = ttls(settings)
    assert len(before) == 11 and all(0 < ttl <= day for ttl in before.values())  # 9 place-months, summed, area
    written = counted(settings, "written:[0-9]*")

    caches_clear()
    with shared.kept_longer(ttl=LONGER, budget=2**20):  # the same area: its area and month summed are found
        assert tables(footfall_result(query())) == first
    found = ttls(settings)
    kept = {name for name, ttl in found.items() if ttl > day}
    assert len(kept) == 2 and all(b":summed:" in name or b":area:" in name for name in kept)
    assert all(found[name] <= LONGER for name in kept)

    caches_clear()
    with shared.kept_longer(ttl=LONGER, budget=2**20):  # its place-months found, its own area and month written
        footfall_result(query(SHIFTED))
    assert len(ttls(settings)) == 13 and all(day < ttl <= LONGER for ttl in ttls(settings).values())
    assert counted(settings, "written:[0-9]*") == written  # the other entries' window is left as it was
    assert counted(settings, "written:longer:*") > 0


def test_a_warm_up_keeps_what_its_worker_holds_in_memory_too(city, settings):
    footfall_result(query())  # this worker holds the area and its month summed, and the node a day
    shared.flush()  # as the worker does once the report is final
    with shared.kept_longer(ttl=LONGER, budget=2**20):
        footfall_result(query())
    kept = [name for name, ttl in ttls(settings).items() if ttl > settings.SHARED_MONTHS_TTL_SECONDS]
    assert len(kept) == 2 and all(b":summed:" in name or b":area:" in name for name in kept)


def test_nothing_kept_longer_is_given_a_shorter_life(city, settings, monkeypatch):
    with shared.kept_longer(ttl=LONGER, budget=2**20):
        footfall_result(query())
    with shared.kept_longer(ttl=LONGER // 2, budget=2**20):  # another warm-up finds them
        caches_clear()
        footfall_result(query())
    # A worker that asked before the warm-up wrote, and writes the same entries after it.
    monkeypatch.setattr(shared, "_found", lambda names_of, count: [None] * count)
    caches_clear()
    footfall_result(query())
    assert len(ttls(settings)) == 11 and all(ttl > LONGER // 2 for ttl in ttls(settings).values())


def test_entries_kept_longer_stay_within_their_own_budget(city, settings):
    footfall_result(query())
    before = ttls(settings)
    written = counted(settings, "written:[0-9]*")

    caches_clear()
    with shared.kept_longer(ttl=LONGER, budget=1):  # what it finds: not kept longer
        footfall_result(query())
    assert ttls(settings).keys() == before.keys()
    assert all(ttl <= settings.SHARED_MONTHS_TTL_SECONDS for ttl in ttls(settings).values())

    caches_clear()
    with shared.kept_longer(ttl=LONGER, budget=1):  # what it writes: for a worker's day, in a worker's window
        footfall_result(query(SHIFTED))
    assert len(ttls(settings)) == 13
    assert all(ttl <= settings.SHARED_MONTHS_TTL_SECONDS for ttl in ttls(settings).values())
    assert counted(settings, "written:[0-9]*") > written


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def private_redis():
    """A Redis of this test's own, on a free port: its URL, and a function that stops it."""
    port = free_port()
    server = subprocess.Popen(
        [shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)

    def stop():
        server.terminate()
        server.wait(timeout=10)

    yield f"redis://127.0.0.1:{port}/0", stop
    if server.poll() is None:
        stop()


def test_redis_going_down_leaves_reports_as_they_are(city, settings, private_redis, caplog):
    settings.SHARED_MONTHS_URL, stop = private_redis
    first = tables(footfall_result(query()))
    assert len(values(settings)) == 10

    stop()
    caches_clear()
    assert tables(footfall_result(query())) == first
    assert "shared months: Redis failed" in caplog.text


def test_redis_that_never_answers_leaves_reports_as_they_are(city, settings, caplog):
    first = tables(footfall_result(query()))
    with socket.socket() as silent:  # takes connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        settings.SHARED_MONTHS_URL = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        caches_clear()
        assert tables(footfall_result(query())) == first
    assert "shared months: Redis failed" in caplog.text


def test_an_area_and_its_months_summed_are_asked_of_the_node_in_one_round_trip(city, settings, monkeypatch):
    asks = []
    mget = redis.Redis.mget
    monkeypatch.setattr(redis.Redis, "mget", lambda client, names: asks.append(list(names)) or mget(client, names))
    first = tables(footfall_result(query()))  # weighed here: nobody had shared it, nor its months summed
    assert [kinds(names) for names in asks] == [{"area", "summed"}, {"month"}]  # the place-months: none shared

    asks.clear()
    caches_clear()  # another worker: the area is shared, and its month summed
    assert tables(footfall_result(query())) == first
    assert [kinds(names) for names in asks] == [{"area", "summed"}]


def test_a_new_area_is_asked_of_the_node_only_once_its_record_marks_it_shared(city, settings, tmp_path, monkeypatch):
    """The node's record of the areas its workers shared (insights/local_months.py): a new area's
    first report makes no round trip for it; a mark is written once its entry is, is only a
    hint, and goes with the entries it records."""
    settings.LOCAL_MONTHS_DIR = str(tmp_path / "local-months")
    asks = []
    mget = redis.Redis.mget
    monkeypatch.setattr(redis.Redis, "mget", lambda client, names: asks.append(list(names)) or mget(client, names))
    marks = tmp_path / "local-months"

    first = tables(footfall_result(query()))
    assert [kinds(names) for names in asks] == [{"month"}]  # the area: not asked
    assert list(marks.rglob("areas/*/*")) == []  # left to flush(), with its entry
    shared.flush()
    assert len(list(marks.rglob("areas/*/*"))) == 1 and len(areas(settings)) == 1

    asks.clear()
    caches_clear()  # another worker
    assert tables(footfall_result(query())) == first
    assert [kinds(names) for names in asks] == [{"area", "summed"}]

    # A mark whose entry is gone costs the round trip: the area is weighed again, as a new one.
    redis.Redis.from_url(settings.SHARED_MONTHS_URL).delete(*areas(settings))
    asks.clear()
    caches_clear()
    assert tables(footfall_result(query())) == first
    assert [kinds(names) for names in asks] == [{"area", "summed"}, {"month"}]

    shared.forget_all()  # the entries and their record
    assert list(marks.rglob("areas/*/*")) == []
    asks.clear()
    caches_clear()
    assert tables(footfall_result(query())) == first
    assert [kinds(names) for names in asks] == [{"month"}]


def test_an_area_not_written_for_the_budget_is_not_marked_shared(city, settings, tmp_path):
    settings.LOCAL_MONTHS_DIR = str(tmp_path / "local-months")
    settings.SHARED_MONTHS_BYTES = 1
    footfall_result(query())
    shared.flush()
    assert areas(settings) == [] and list(tmp_path.rglob("areas/*/*")) == []


def test_a_mark_that_cannot_be_written_leaves_reports_as_they_are(city, settings, tmp_path, caplog, monkeypatch):
    settings.LOCAL_MONTHS_DIR = str(tmp_path / "local-months")
    monkeypatch.setattr(local_months, "_warned_unmarked", False)
    database = tmp_path / "local-months" / settings.DATABASES["default"]["NAME"]
    database.mkdir(parents=True)
    (database / "areas").write_text("a file where the record's directory would be")
    first = tables(footfall_result(query()))
    shared.flush()  # the area's entry written, its mark not: logged, not raised
    caches_clear()
    assert tables(footfall_result(query())) == first
    shared.flush()
    assert caplog.text.count("the record of the areas shared could not be written") == 1


def test_a_node_copy_that_cannot_be_read_leaves_reports_as_they_are(city, settings, tmp_path, caplog):
    expected = tables(footfall_result(query()))
    settings.LOCAL_MONTHS_DIR = str(tmp_path / "local-months")
    assert local_months.write()
    for copy in (tmp_path / "local-months").glob("*/*/*/*"):
        if copy.is_dir():  # a month's copy or the record: made unreadable as a whole
            shutil.rmtree(copy)
            copy.write_text("not a directory")
        else:  # the grid's cells
            copy.unlink()
            copy.mkdir()
    local_months._MAPPED.clear()
    local_months._CELL_COPIES.clear()
    caches_clear()
    assert tables(footfall_result(query())) == expected
    assert "could not be read" in caplog.text


def test_a_new_state_of_the_releases_starts_an_empty_record_and_the_copy_deletes_the_old(
    city, settings, tmp_path, monkeypatch
):
    settings.LOCAL_MONTHS_DIR = str(tmp_path / "local-months")
    footfall_result(query())
    shared.flush()
    (old,) = tmp_path.rglob("areas/*")
    a_release_adds_a_cell_under_the_area(tmp_path)
    asks = []
    mget = redis.Redis.mget
    monkeypatch.setattr(redis.Redis, "mget", lambda client, names: asks.append(list(names)) or mget(client, names))
    caches_clear()
    footfall_result(query())  # weighed again under the new state, without asking
    assert all("area" not in kinds(names) for names in asks)
    shared.flush()
    (new,) = (directory for directory in tmp_path.rglob("areas/*") if directory != old)
    local_months.write()  # after a release: the grid's copy under the new state
    assert list(tmp_path.rglob("areas/*")) == [new]


def kinds(names: list[str]) -> set[str]:
    """What the names asked for are: an area, an area's month summed, or a place-month."""
    return {"area" if ":area:" in name else "summed" if ":summed:" in name else "month" for name in names}


def test_an_od_matrix_of_few_zone_months_is_summed_from_the_node_copy_and_not_asked_of_the_node(
    trips, settings, tmp_path, monkeypatch
):
    """Cheaper than the round trip to Redis, which the service's first report would make for
    nothing; more zone-months than COPY_FIRST_PLACE_MONTHS are asked of the node, as before."""
    order = query(geometry=None, start=DWELL_START, end=DWELL_END, regions=region_names(["W", "E", "N"]))
    expected = from_database(settings, od_matrix_result, order)
    settings.LOCAL_MONTHS_DIR = str(tmp_path / "local-months")
    assert local_months.write()
    caches_clear()
    asked = []
    get_summed = shared.get_summed
    monkeypatch.setattr(shared, "get_summed", lambda keys: asked.append(keys) or get_summed(keys))

    assert tables(od_matrix_result(order)) == expected
    assert asked == [] and values(settings) == []  # neither asked nor shared

    monkeypatch.setattr(insights.sums, "COPY_FIRST_PLACE_MONTHS", 0)
    caches_clear()
    assert tables(od_matrix_result(order)) == expected
    assert len(asked) == 1 and area_months(settings) != []
