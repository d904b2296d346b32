"""Property tests of the release model, over random small datasets with many values near k,
random areas (MultiPolygons of far-apart parts among them), periods, granularities and time
zones, for every product:

(a) every number a report shows is the post-processing of the release table (oracle.py), and
    the release table protects each cell-hour's breakdown table (secondary suppression);
(b) no withheld value influences any output: a change to the aggregates that leaves the
    release table as it is leaves every report byte-identical.

Each property runs a fixed number of examples, derandomized, and counts the examples it really
checked (a wrapper asserts the count)."""

import copy
import datetime as dt
import json
import random
from contextlib import contextmanager
from zoneinfo import ZoneInfo

import pytest
from django.contrib.gis.geos import MultiPolygon
from django.db import connection, transaction
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from insights.compare import compare_result
from insights.kinds import KINDS
from insights.releases import release_policy_of_settings
from insights.reports import Query, catchment_result, dwell_result, footfall_result, od_matrix_result
from insights.selectors import region_names
from marketplace.services import product_grant
from tests import grid
from tests.factories import (
    catchment_product,
    compare_product,
    dwell_product,
    footfall_product,
    granted_tenant,
    od_matrix_product,
)
from tests.privacy import oracle
from tests.privacy.conftest import geojson
from tests.privacy.datasets import HOME_REGIONS, HOURS, ZONES, dataset, hidden_changed

UTC = dt.UTC
K = 10
HOUR = dt.timedelta(hours=1)
# Derandomized and without an example database: every run checks the same examples. Without
# shrinking: a failing example is printed as found (shrinking one that loads data takes minutes).
PROPERTY_SETTINGS = hypothesis_settings(
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
ZONE_NAMES = ["Europe/Berlin", "UTC", "America/New_York"]


def rectangle(col: float, row: float, cols: float, rows: float):
    return grid.square(col, row, cols, rows)


@st.composite
def areas(draw, *, whole_cells: bool = False):
    """A rectangle over the 3 x 3 block, often with a second part over the far block."""
    step = 1 if whole_cells else 4
    low = 2 if whole_cells else 1
    col, row = draw(st.integers(0, 3 * step - low)) / step, draw(st.integers(0, 3 * step - low)) / step
    width = draw(st.integers(low, int(3 * step - col * step))) / step
    height = draw(st.integers(low, int(3 * step - row * step))) / step
    parts = [rectangle(col, row, width, height)]
    if draw(st.booleans()):
        far_col, far_row = draw(st.integers(0, step)) / step, draw(st.integers(0, step)) / step
        far_width = draw(st.integers(1, int(2 * step - far_col * step))) / step
        far_height = draw(st.integers(1, int(2 * step - far_row * step))) / step
        parts.append(rectangle(20 + far_col, far_row, far_width, far_height))
    return MultiPolygon(*parts, srid=4326)


@st.composite
def periods(draw, *, zones=ZONE_NAMES, granularities=("hour", "day", "week")):
    """(start, end, granularity, time zone): hours within the data; local days and weeks."""
    time_zone = draw(st.sampled_from(zones))
    granularity = draw(st.sampled_from(granularities))
    tz = ZoneInfo(time_zone)
    if granularity == "hour":
        first = draw(st.integers(0, len(HOURS) - 2))
        start = HOURS[first]
        return start, start + draw(st.integers(1, min(8, len(HOURS) - first))) * HOUR, granularity, time_zone
    if granularity == "day":
        day = dt.date(2026, 3, 28) + dt.timedelta(days=draw(st.integers(-1, 1)))
        days = draw(st.integers(1, 2))
        midnight = oracle.bucket_start
        start = midnight(dt.datetime.combine(day, dt.time(12), tzinfo=tz).astimezone(UTC), "day", tz)
        end = midnight(dt.datetime.combine(day + dt.timedelta(days=days), dt.time(12), tzinfo=tz), "day", tz)
        return start, end, granularity, time_zone
    monday = dt.date(2026, 3, 23)
    start = oracle.bucket_start(dt.datetime.combine(monday, dt.time(12), tzinfo=tz), "day", tz)
    end = oracle.bucket_start(dt.datetime.combine(monday + dt.timedelta(days=7), dt.time(12), tzinfo=tz), "day", tz)
    return start, end, granularity, time_zone


@st.composite
def policies(draw):
    return {"round_to": draw(st.sampled_from([1, 5])), "noise_scale": draw(st.sampled_from([0.0, 1.5]))}


@st.composite
def orders(draw):
    """One query for every product: an area, a period, the comparison and the regions."""
    start, end, granularity, time_zone = draw(periods())
    compare_other_area = draw(st.booleans()) or granularity != "hour"
    shift = draw(st.integers(-12, 12)) * HOUR
    if not (HOURS[0] <= start + shift and end + shift <= HOURS[-1] + HOUR):
        shift = 0 * HOUR
    return {
        "geometry": draw(areas()),
        "start": start,
        "end": end,
        "granularity": granularity,
        "time_zone": time_zone,
        "breakdowns": draw(st.sampled_from([(), ("age_band",), ("gender",), ("age_band", "gender")])),
        "comparison_geometry": draw(areas()) if compare_other_area else None,
        "comparison_shift": shift,
        "regions": draw(st.one_of(st.none(), st.lists(st.sampled_from(HOME_REGIONS), min_size=1, unique=True))),
        "zones": draw(st.lists(st.sampled_from(ZONES), min_size=1, unique=True)),
    }


@contextmanager
def rolled_back():
    """An example's loads and reports, undone after it: the next example starts from the same database."""
    with transaction.atomic():
        yield
        transaction.set_rollback(True)


def policy_settings(settings, policy: dict) -> None:
    settings.PRIVACY_K = K
    settings.PRIVACY_ROUND_TO = policy["round_to"]
    settings.PRIVACY_NOISE_SCALE = policy["noise_scale"]


def results(query: dict, versions: dict[str, int], policy) -> dict[str, dict]:
    """Every product's result for the query, computed by the engine."""
    common = {
        "start": query["start"],
        "end": query["end"],
        "granularity": query["granularity"],
        "time_zone": query["time_zone"],
        "policy": policy,
    }
    regions = region_names(query["regions"]) if query["regions"] else None
    comparison = (
        {"comparison_geometry": query["comparison_geometry"]}
        if query["comparison_geometry"]
        else {
            "comparison_start": query["start"] + query["comparison_shift"],
            "comparison_end": query["end"] + query["comparison_shift"],
        }
    )
    area = {"geometry": query["geometry"]}
    return {
        "footfall": footfall_result(
            Query(**area, **common, version=versions["presence"], breakdowns=query["breakdowns"])
        ),
        "dwell": dwell_result(Query(**area, **common, version=versions["dwell"])),
        "catchment": catchment_result(Query(**area, **common, version=versions["home"], regions=regions)),
        "compare": compare_result(Query(**area, **common, version=versions["presence"], **comparison)),
        "od-matrix": od_matrix_result(Query(**common, version=versions["trips"], regions=region_names(query["zones"]))),
    }


# --- (a) every number is the release table post-processed ----------------------------------


def assert_rows(actual: list[dict], expected: list[dict], *, without=("average_present",)) -> None:
    trimmed = [{key: value for key, value in row.items() if key not in without} for row in actual]
    assert trimmed == expected


def assert_cell_hour_product(product: str, result: dict, expected: dict) -> None:
    metric = result["metric"]
    assert_rows(result["series"], expected["series"])
    assert_rows(result.get("segments", []), expected.get("segments", []))
    assert result["cells"] == expected["cells"]
    for row in [*result["series"], *result.get("segments", [])]:
        if product == "footfall":
            value = row[metric]
            assert row["average_present"] == (None if value is None else round(value / row["hours"], 1))
    privacy = result["privacy"]
    for name in ("cell_hours", "cell_hours_released", "released_share"):
        assert privacy[name] == expected["privacy"][name], name
    if product != "catchment":
        for name in ("breakdown_values", "breakdown_values_released"):
            assert privacy[name] == expected["privacy"][name], name
        numbers = [*result["series"], *result.get("segments", []), *result["cells"]]
        assert privacy["suppressed_values"] == sum(row[metric] is None for row in numbers)


def assert_catchment(result: dict, expected: dict, regions: list[str] | None) -> None:
    assert result["everyone"] == expected["everyone"]
    by_region = expected["by_region"]
    ids = {code: number for number, (code, _) in region_names(HOME_REGIONS).items()}
    listed = regions or [code for code, number in ids.items() if by_region.count.get(number)]
    assert sorted(row["region"] for row in result["regions"]) == sorted(listed)
    total = result["everyone"]["person_hours"]
    for row in result["regions"]:
        value = row["person_hours"]
        assert value == by_region.number(ids[row["region"]]), row
        assert row["share"] == (round(value / total, 4) if value is not None and total else None)
        assert row["suppressed_reason"] == (oracle.NOT_RELEASED if value is None else None)
    order = [(row["person_hours"] is None, -(row["person_hours"] or 0), row["region"]) for row in result["regions"]]
    assert order == sorted(order)


def assert_compare(result: dict, query: dict, policy: int) -> None:
    window = {key: query[key] for key in ("start", "end", "granularity", "time_zone")}
    ordered = oracle.cell_hour_result(product="footfall", policy=policy, geometry=query["geometry"], **window)
    if query["comparison_geometry"]:
        other = {**window, "geometry": query["comparison_geometry"]}
    else:
        shift = query["comparison_shift"]
        other = {**window, "geometry": query["geometry"], "start": query["start"] + shift, "end": query["end"] + shift}
    compared = oracle.cell_hour_result(product="footfall", policy=policy, **other)
    assert len(result["series"]) == len(ordered["series"]) == len(compared["series"])
    for row, mine, theirs in zip(result["series"], ordered["series"], compared["series"], strict=True):
        assert (row["start"], row["person_hours"], row["released_share"]) == (
            mine["start"],
            mine["person_hours"],
            mine["released_share"],
        )
        assert (row["comparison_start"], row["comparison_person_hours"], row["comparison_released_share"]) == (
            theirs["start"],
            theirs["person_hours"],
            theirs["released_share"],
        )
        both = row["person_hours"] is not None and row["comparison_person_hours"] is not None
        assert row["change"] == (row["person_hours"] - row["comparison_person_hours"] if both else None)


def assert_post_processing(query: dict, computed: dict[str, dict], policy: int) -> None:
    window = {key: query[key] for key in ("start", "end", "granularity", "time_zone")}
    for product in ("footfall", "dwell", "catchment"):
        breakdowns = {"footfall": query["breakdowns"], "dwell": ("dwell_band",), "catchment": ()}[product]
        expected = oracle.cell_hour_result(
            product=product, policy=policy, geometry=query["geometry"], breakdowns=breakdowns, **window
        )
        assert_cell_hour_product(product, computed[product], expected)
        if product == "catchment":
            assert_catchment(computed[product], expected, query["regions"])
    assert_compare(computed["compare"], query, policy)
    expected = oracle.od_matrix_result(policy=policy, zones=query["zones"], **window)
    assert computed["od-matrix"]["flows"] == expected["flows"]
    assert computed["od-matrix"]["matrix"] == expected["matrix"]


ENGINE_EXAMPLES = 5


def test_every_number_of_every_product_is_the_release_post_processed(regions, settings, tmp_path):
    checked = []

    @given(seed=st.integers(0, 2**32), policy=policies(), queries=st.lists(orders(), min_size=2, max_size=3))
    @hypothesis_settings(PROPERTY_SETTINGS, max_examples=ENGINE_EXAMPLES)
    def check(seed, policy, queries):
        policy_settings(settings, policy)
        with rolled_back():
            versions = dataset(seed, k=K).load(tmp_path)
            release = release_policy_of_settings()
            for query in queries:
                assert_post_processing(query, results(query, versions, release), release.pk)
            assert oracle.released(KINDS["presence"], release.pk), "nothing was published: the example checks nothing"
            for kind in (KINDS["presence"], KINDS["dwell"], KINDS["home"]):
                assert oracle.margin_violations(kind, release.pk, K) == []
        checked.append(len(queries))

    check()
    print(f"post-processing: {len(checked)} examples, {sum(checked)} queries of every product")
    assert len(checked) >= ENGINE_EXAMPLES


# --- (b) no withheld value changes any report ---------------------------------------------

UNCHANGED_EXAMPLES = 4
SEQUENCES = ("insights_datasetversion", "insights_release")


def next_ids() -> dict[str, int]:
    with connection.cursor() as cursor:
        ids = {}
        for table in SEQUENCES:
            cursor.execute("SELECT nextval(pg_get_serial_sequence(%s, 'id'))", [table])
            ids[table] = cursor.fetchone()[0]
        return ids


def reset_ids(ids: dict[str, int]) -> None:
    """The next load gets the same dataset version ids as the one before (sequences do not roll back)."""
    with connection.cursor() as cursor:
        for table, number in ids.items():
            cursor.execute("SELECT setval(pg_get_serial_sequence(%s, 'id'), %s, false)", [table, number])


def release_tables(policy: int) -> dict[str, dict]:
    return {name: oracle.released(kind, policy) for name, kind in KINDS.items()}


def withheld_values(policy: int) -> int:
    """How many loaded values the release withheld."""
    with connection.cursor() as cursor:
        withheld = 0
        for kind in KINDS.values():
            cursor.execute(
                f"SELECT count(*) FROM {kind.table} raw WHERE NOT EXISTS (SELECT 1 FROM {kind.table}_released_hours r"
                f" WHERE r.policy_id = %s AND {' AND '.join(f'r.{c} = raw.{c}' for c in kind.key.split(', '))})",
                [policy],
            )
            withheld += cursor.fetchone()[0]
        return withheld


def test_no_withheld_value_changes_any_report_of_any_product(regions, settings, tmp_path):
    checked = []

    @given(
        seed=st.integers(0, 2**32),
        change=st.integers(0, 2**32),
        policy=policies(),
        queries=st.lists(orders(), min_size=1, max_size=2),
    )
    @hypothesis_settings(PROPERTY_SETTINGS, max_examples=UNCHANGED_EXAMPLES)
    def check(seed, change, policy, queries):
        policy_settings(settings, policy)
        release = release_policy_of_settings()  # kept across the example's loads
        original = dataset(seed, k=K)
        ids = next_ids()
        documents, tables, differences = [], [], []
        for data in (original, hidden_changed(original, change)):
            reset_ids(ids)
            with rolled_back():
                versions = data.load(tmp_path)
                tables.append(release_tables(release.pk))
                differences.append(withheld_values(release.pk))
                documents.append(
                    [json.dumps(results(query, versions, release), sort_keys=True, default=list) for query in queries]
                )
        assert original != hidden_changed(original, change), "the change changed nothing: it tests nothing"
        assert tables[0] == tables[1], "the change was meant to leave the release as it is"
        assert differences[0] and differences[1], "nothing was withheld: the example checks nothing"
        for query, before, after in zip(queries, *documents, strict=True):
            assert before == after, f"a withheld value changed a report: {query}"
        checked.append(len(queries))

    check()
    print(f"withheld values changed: {len(checked)} examples, {sum(checked)} queries of every product")
    assert len(checked) >= UNCHANGED_EXAMPLES


def test_a_cell_whose_every_value_is_withheld_is_like_a_cell_without_data(regions, settings, tmp_path):
    """Two people counted once in a cell where no one else ever was: their value is withheld,
    so no report may tell that cell from one without data. (Reports list the cells of
    insights_cell, which every loaded row adds to, withheld or not: the cell appears in the
    report's cells, its cell_hours, and the denominator of every released_share.)"""
    policy_settings(settings, {"round_to": 1, "noise_scale": 0.0})
    release = release_policy_of_settings()
    original = dataset(7, k=K)
    changed = copy.deepcopy(original)
    changed.presence[((3, 1), HOURS[5])] = {("*", "*"): 2}  # east of the block: no other row there
    window = {"start": HOURS[1], "end": HOURS[9], "granularity": "hour", "time_zone": "Europe/Berlin"}
    area = MultiPolygon(rectangle(1, 0, 3, 3), srid=4326)
    ids = next_ids()
    documents, tables = [], []
    for data in (original, changed):
        reset_ids(ids)
        with rolled_back():
            versions = data.load(tmp_path, kinds={"presence"})
            tables.append(release_tables(release.pk))
            result = footfall_result(Query(geometry=area, **window, version=versions["presence"], policy=release))
            documents.append(json.dumps(result, sort_keys=True, default=list))  # Rows as lists of rows

    assert tables[0] == tables[1]
    assert documents[0] == documents[1], "a cell with only withheld values shows in the report"


# --- (a) through the API, for several organisations ---------------------------------------

API_EXAMPLES = 4
PRODUCTS = ["footfall", "dwell", "catchment", "compare", "od-matrix"]
KIND_OF = {"footfall": "presence", "compare": "presence", "dwell": "dwell", "catchment": "home", "od-matrix": "trips"}


@pytest.fixture
def organisations(db):
    """Three organisations in three time zones, each with every product."""
    clients = []
    for time_zone in ZONE_NAMES:
        tenant = granted_tenant(time_zone=time_zone)
        for product in (compare_product(), dwell_product(), catchment_product(), od_matrix_product()):
            product_grant(tenant=tenant, product=product)
        clients.append((tenant, time_zone))
    footfall_product()
    return clients


def test_orders_of_several_organisations_are_the_release_post_processed(
    regions, organisations, settings, tmp_path, client_for, django_capture_on_commit_callbacks
):
    checked = []
    clients = [(client_for(tenant), time_zone) for tenant, time_zone in organisations]

    @given(
        seed=st.integers(0, 2**32),
        policy=policies(),
        picks=st.lists(st.tuples(st.integers(0, len(clients) - 1), st.data()), min_size=3, max_size=3),
    )
    @hypothesis_settings(PROPERTY_SETTINGS, max_examples=API_EXAMPLES)
    def check(seed, policy, picks):
        policy_settings(settings, policy)
        # Three products an example, in turn: four examples order each of the five.
        products = [PRODUCTS[(2 * len(checked) + turn) % len(PRODUCTS)] for turn in range(len(picks))]
        ordered = []
        with rolled_back():
            dataset(seed, k=K).load(tmp_path, kinds={KIND_OF[product] for product in products})
            release = release_policy_of_settings()
            for (client_index, data), product in zip(picks, products, strict=True):
                client, time_zone = clients[client_index]
                query = data.draw(api_orders(time_zone))
                with django_capture_on_commit_callbacks(execute=True):
                    response = client.post("/api/v1/reports/", api_body(product, query), format="json")
                assert response.status_code == 201, response.content
                report = client.get(f"/api/v1/reports/{response.json()['id']}/").json()
                assert report["status"] == "succeeded", report
                assert_api_result(product, report["result"], query, release.pk)
                ordered.append(product)
        checked.append(ordered)

    check()
    print(f"orders: {len(checked)} examples, {sum(len(products) for products in checked)} orders of {checked}")
    assert len(checked) >= API_EXAMPLES


@st.composite
def api_orders(draw, time_zone: str):
    """An order a tenant may place: whole local buckets inside the data, areas of 4 cells or more."""
    start, end, granularity, _ = draw(periods(zones=[time_zone], granularities=("hour", "day")))
    if start < HOURS[0] or end > HOURS[-1] + HOUR:
        start, end, granularity = HOURS[1], HOURS[1] + 6 * HOUR, "hour"
    shift = draw(st.integers(-3, 3)) * HOUR if granularity == "hour" else 0 * HOUR
    if start + shift < HOURS[0] or end + shift > HOURS[-1] + HOUR:
        shift = 0 * HOUR
    return {
        "geometry": draw(areas(whole_cells=True)),
        "start": start,
        "end": end,
        "granularity": granularity,
        "time_zone": time_zone,
        "breakdowns": draw(st.sampled_from([[], ["age_band"], ["gender"]])),
        "comparison_geometry": draw(areas(whole_cells=True)) if shift == 0 * HOUR else None,
        "comparison_shift": shift,
        "regions": draw(st.one_of(st.none(), st.lists(st.sampled_from(HOME_REGIONS), min_size=1, unique=True))),
        "zones": draw(st.lists(st.sampled_from(ZONES), min_size=1, unique=True)),
    }


def api_body(product: str, query: dict) -> dict:
    zone = ZoneInfo(query["time_zone"])
    body = {
        "product": product,
        "geometry": geojson(query["geometry"]),
        "start": query["start"].astimezone(zone).isoformat(),
        "end": query["end"].astimezone(zone).isoformat(),
        "granularity": query["granularity"],
    }
    if product == "footfall":
        body["breakdowns"] = query["breakdowns"]
    if product == "catchment" and query["regions"]:
        body["regions"] = query["regions"]
    if product == "od-matrix":
        body["geometry"] = grid.geojson(grid.square(0, 0, 4, 8))  # over W, E and N
        body["regions"] = query["zones"]
    if product == "compare":
        if query["comparison_geometry"]:
            body["compare_geometry"] = geojson(query["comparison_geometry"])
        else:
            body["compare_start"] = (query["start"] + query["comparison_shift"]).astimezone(zone).isoformat()
            body["compare_end"] = (query["end"] + query["comparison_shift"]).astimezone(zone).isoformat()
    return body


def assert_api_result(product: str, result: dict, query: dict, policy: int) -> None:
    window = {key: query[key] for key in ("start", "end", "granularity", "time_zone")}
    if product == "compare":
        assert_compare(result, query, policy)
    elif product == "od-matrix":
        expected = oracle.od_matrix_result(policy=policy, zones=query["zones"], **window)
        assert (result["flows"], result["matrix"]) == (expected["flows"], expected["matrix"])
    else:
        breakdowns = {"footfall": query["breakdowns"], "dwell": ("dwell_band",), "catchment": ()}[product]
        expected = oracle.cell_hour_result(
            product=product, policy=policy, geometry=query["geometry"], breakdowns=breakdowns, **window
        )
        assert_cell_hour_product(product, result, expected)
        if product == "catchment":
            assert_catchment(result, expected, query["regions"])


def test_the_datasets_hold_many_values_near_k():
    """The generator's point: values within 3 of k are common, so the threshold is exercised."""
    data = dataset(random.Random(1).randint(0, 2**32), k=K)
    values = [value for rows in data.presence.values() for value in rows.values()]
    near = sum(K - 3 <= value <= K + 3 for value in values)
    assert near / len(values) > 0.3
    assert any(value < K for value in values) and any(value >= K for value in values)
