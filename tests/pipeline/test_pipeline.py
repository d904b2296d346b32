"""The reference pipeline end to end on a small synthetic city: the evidence for an auditor."""

import csv
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
from django.contrib.gis.geos import MultiPolygon
from django.core.management import CommandError, call_command
from django.utils import timezone

from insights.models import DatasetVersion
from insights.reports import Query, footfall_result
from insights.selectors import current_release_policy
from insights.services import dwell_load, home_load, presence_load, regions_load, trips_load
from pipeline.city import Day, city_population, day_events
from pipeline.extrapolation import FACTORS
from pipeline.numbers import number_hash
from pipeline.run import HEADERS, pipeline_run
from pipeline.selectors import OptOutSnapshot
from pipeline.services import optout_status_set
from pipeline.stage1 import stage1_separate
from tests import grid
from tests.pipeline import direct

SUBSCRIBERS = 800
SEED = 7
START = dt.date(2026, 3, 29)  # the 23-hour Sunday of the spring DST change, and a Monday
DAYS = 2
THRESHOLD = 5
EVERYONE = OptOutSnapshot(taken_at=dt.datetime(2026, 3, 26, 12, tzinfo=dt.UTC), number_hashes=frozenset())


def run(tmp: Path, population, snapshot=EVERYONE, **overrides):
    options = {"start": START, "days": DAYS, "min_subscribers": THRESHOLD, "snapshot": snapshot}
    return pipeline_run(population=population, out_dir=tmp / "out", work_dir=tmp / "work", **(options | overrides))


def rows(path: Path) -> list[dict]:
    with path.open(newline="") as lines:
        return list(csv.DictReader(lines))


@pytest.fixture(scope="module")
def population():
    return city_population(subscribers=SUBSCRIBERS, seed=SEED)


@pytest.fixture(scope="module")
def commuter(population) -> str:
    """The number of a worker who lives near the centre and works in the CBD: seen in busy cells."""
    centre = population.work[population.roles == "worker"].mean(axis=0)
    for number, role, home, work in zip(
        population.numbers, population.roles, population.home, population.work, strict=True
    ):
        home_km, work_km = np.hypot(*(home - centre)) / 1000, np.hypot(*(work - centre)) / 1000
        if role == "worker" and 1.0 < home_km < 2.0 and work_km < 0.3:
            return number
    raise AssertionError("no commuter in the test city")


@pytest.fixture(scope="module")
def direct_counts(population) -> dict:
    """{kind: {key: (subscribers, extrapolated)}} counted from the raw events of the run's days."""
    counts = {"home": {}, "dwell": {}, "trips": {}}
    for offset in range(DAYS):
        for kind, day_counts in direct.counts(population, Day(START + dt.timedelta(days=offset))).items():
            counts[kind] |= day_counts
    return counts


@pytest.fixture(scope="module")
def everyone_run(population, tmp_path_factory):
    return run(tmp_path_factory.mktemp("everyone"), population)


@pytest.fixture(scope="module")
def opted_out_run(population, commuter, tmp_path_factory):
    snapshot = OptOutSnapshot(taken_at=EVERYONE.taken_at, number_hashes=frozenset({number_hash(number=commuter)}))
    return run(tmp_path_factory.mktemp("opted-out"), population, snapshot)


def test_an_opted_out_subscriber_contributes_to_no_output_count(
    population, commuter, everyone_run, opted_out_run, tmp_path
):
    # Given the same city without the commuter at all (never a subscriber)
    never_there = run(tmp_path, population.without({commuter}))

    # Then opting out gives exactly the files of a city without them, line for line
    for kind in HEADERS:
        assert opted_out_run.files[kind].read_bytes() == never_there.files[kind].read_bytes(), kind
    # And they did count before they opted out
    with_them = {
        (r["cell"], r["hour"]): int(r["visits"])
        for r in rows(everyone_run.files["presence"])
        if r["gender"] == r["age_band"] == "*"
    }
    without = {
        (r["cell"], r["hour"]): int(r["visits"])
        for r in rows(opted_out_run.files["presence"])
        if r["gender"] == r["age_band"] == "*"
    }
    changed = {key for key in with_them.keys() | without.keys() if with_them.get(key) != without.get(key)}
    rows_with = {kind: everyone_run.manifest["files"][kind]["rows"] for kind in HEADERS}
    rows_without = {kind: opted_out_run.manifest["files"][kind]["rows"] for kind in HEADERS}
    print(
        f"\nopted-out commuter {commuter[:6]}…:"
        f"\n  presence *,* rows: {len(with_them)} with them, {len(without)} without, {len(changed)} differ"
        f"\n  people-hours (sum of those rows): {sum(with_them.values())} with them, {sum(without.values())} without"
        f"\n  rows per file: {rows_with} with them, {rows_without} without"
    )
    assert len(changed) >= 10
    assert all(without.get(key, 0) < with_them.get(key, 0) or key not in with_them for key in changed)
    assert opted_out_run.manifest["opt_out_snapshot"]["subscribers_dropped"] == 1
    assert everyone_run.manifest["opt_out_snapshot"]["subscribers_dropped"] == 0


def test_stage_1_drops_the_opted_out_before_any_pseudonym_and_keeps_no_number(population, commuter):
    day = Day(START)
    events = day_events(population, day)

    separated = stage1_separate(
        events=events,
        contracts=population.contracts(),
        day_key=b"k" * 32,
        opted_out=frozenset({number_hash(number=commuter)}),
    )

    assert separated.opted_out_dropped == 1
    assert separated.events_dropped == events.filter(pc.equal(events["subscriber"], commuter)).num_rows > 0
    assert separated.events.column_names == ["pseudonym", "time", "easting", "northing", "event"]
    assert separated.attributes.column_names == ["pseudonym", "birth_date", "gender", "tariff"]
    numbers = set(population.numbers)
    assert not numbers & set(separated.events["pseudonym"].to_pylist())
    assert separated.attributes.num_rows == SUBSCRIBERS - 1


def test_pseudonyms_of_two_days_cannot_be_linked(population):
    day_one, day_two = Day(START), Day(START + dt.timedelta(days=1))
    first = stage1_separate(
        events=day_events(population, day_one),
        contracts=population.contracts(),
        day_key=b"1" * 32,
        opted_out=frozenset(),
    )
    second = stage1_separate(
        events=day_events(population, day_two),
        contracts=population.contracts(),
        day_key=b"2" * 32,
        opted_out=frozenset(),
    )

    one, two = set(first.attributes["pseudonym"].to_pylist()), set(second.attributes["pseudonym"].to_pylist())
    assert len(one) == len(two) == SUBSCRIBERS  # the same people on both days
    assert not one & two  # and not one pseudonym in common


def test_no_output_line_carries_anything_to_join_days_on(population, everyone_run):
    """The files hold counts per place and hour: no pseudonym, number or hash, and each line
    is about one hour of one day."""
    identifiers = set(population.numbers) | {number_hash(number=n) for n in population.numbers}
    for kind, path in everyone_run.files.items():
        lines = path.read_text().splitlines()
        assert lines[0] == HEADERS[kind]
        for line in lines[1:]:
            fields = line.split(",")
            assert len(fields) == len(HEADERS[kind].split(","))
            assert not identifiers & set(fields)
            assert all(len(field) < 32 for field in fields if not field.startswith("CRS3035"))


def test_the_raw_events_and_the_day_keys_are_deleted_day_by_day_and_after_the_run(population, tmp_path):
    work = tmp_path / "work"
    seen = []

    def look(day, rows):
        seen.append((day, sorted(p.relative_to(work).as_posix() for p in work.rglob("*") if p.is_file())))

    run(tmp_path, population.without(set(population.numbers[200:])), days=2, on_day=look)

    # While a run goes on, only the contracts stay between days: no event file, no key, no stage 1 output
    assert seen == [(START, ["raw/contracts.parquet"]), (START + dt.timedelta(days=1), ["raw/contracts.parquet"])]
    assert not work.exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "dwell.csv",
        "home.csv",
        "manifest.json",
        "presence.csv",
        "regions.geojson",
        "trips.csv",
    ]


def test_a_run_that_fails_still_deletes_its_raw_data(population, tmp_path):
    def fail(day, rows):
        raise RuntimeError("the disk is full")

    with pytest.raises(RuntimeError):
        run(tmp_path, population.without(set(population.numbers[100:])), days=1, on_day=fail)

    assert not (tmp_path / "work").exists()


def test_every_row_is_the_direct_count_of_the_events_extrapolated_and_thresholded(direct_counts, everyone_run):
    expected = direct.released(direct_counts["home"], min_subscribers=THRESHOLD)
    presence = {
        (r["cell"], r["hour"], "*"): int(r["visits"])
        for r in rows(everyone_run.files["presence"])
        if r["age_band"] == r["gender"] == "*"
    }
    home = {(r["cell"], r["hour"], r["home_region"]): int(r["visitors"]) for r in rows(everyone_run.files["home"])}
    trips = {(r["origin"], r["destination"], r["hour"]): int(r["trips"]) for r in rows(everyone_run.files["trips"])}
    dwell = {(r["cell"], r["hour"], r["dwell_band"]): int(r["visitors"]) for r in rows(everyone_run.files["dwell"])}

    assert presence == {key: visits for key, visits in expected.items() if key[2] == "*"}
    assert home == expected  # everyone ("*") and per home region, from the night's cell
    assert trips == direct.released(direct_counts["trips"], min_subscribers=THRESHOLD)
    assert dwell == direct.released(direct_counts["dwell"], min_subscribers=THRESHOLD)
    low = min(min(f.values()) for f in FACTORS.values())
    high = max(max(f.values()) for f in FACTORS.values())
    for key, visits in presence.items():
        people = direct_counts["home"][key][0]
        assert people >= THRESHOLD
        assert people * low - 1 < visits <= people * high


@pytest.mark.django_db
def test_the_marketplace_reports_the_pipeline_output_as_counted_from_the_events(direct_counts, everyone_run, settings):
    settings.PRIVACY_K = 2  # every row the pipeline wrote is at least THRESHOLD: nothing withheld
    regions_load(path=everyone_run.regions_path)
    manifest = everyone_run.manifest
    loads = [
        loader(path=everyone_run.files[kind], manifest=manifest)
        for kind, loader in [
            ("presence", presence_load),
            ("dwell", dwell_load),
            ("home", home_load),
            ("trips", trips_load),
        ]
    ]
    expected = direct.released(direct_counts["home"], min_subscribers=THRESHOLD)
    city = MultiPolygon(grid.square(0, 0, 24, 20), srid=4326)
    in_city = {code for col in range(24) for row in range(20) for code in [grid.code(col, row)]}

    report = footfall_result(
        Query(
            geometry=city,
            start=Day(START).start,
            end=Day(START + dt.timedelta(days=DAYS)).start,
            granularity="hour",
            time_zone="UTC",
            version=loads[0].version,
            policy=current_release_policy(),
        ),
        with_cells=False,
    )

    by_hour = {}
    for (cell, hour, segment), visits in expected.items():
        if segment == "*" and cell in in_city:
            by_hour[hour] = by_hour.get(hour, 0) + visits
    series = {row["start"]: row["person_hours"] for row in report["series"]}
    assert len(series) == 23 + 24
    assert {start.replace("+00:00", "Z"): visits for start, visits in series.items()} == by_hour
    assert all(DatasetVersion.objects.get(pk=load.version).manifest == manifest for load in loads)
    # Every report shows the manifests of the versions it read.
    assert [source["manifest"] for source in report["sources"]] == [manifest]


@pytest.mark.django_db
def test_pipeline_run_takes_the_registry_s_opt_outs_and_loads_with_its_manifest(tmp_path):
    small = city_population(subscribers=300, seed=42)
    optout_status_set(number_hash=number_hash(number=small.numbers[0]), opted_out=True)
    optout_status_set(number_hash=number_hash(number="+4917000000000"), opted_out=True)  # not a subscriber
    export = tmp_path / "optout.json"
    call_command("optout_export", out=export)
    before = timezone.now()

    call_command(
        "pipeline_run",
        start=START,
        days=1,
        subscribers=300,
        seed=42,
        opt_out=export,
        out_dir=tmp_path / "out",
        work_dir=tmp_path / "work",
        load=True,
    )

    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["opt_out_snapshot"]["numbers"] == 2
    assert manifest["opt_out_snapshot"]["subscribers_dropped"] == 1
    assert dt.datetime.fromisoformat(manifest["opt_out_snapshot"]["taken_at"]) <= before
    assert manifest["threshold"]["min_subscribers"] == 5
    assert manifest["period"] == {
        "start": "2026-03-29T00:00:00+01:00",
        "end": "2026-03-30T00:00:00+02:00",
        "time_zone": "Europe/Berlin",
        "days": 1,
    }
    loaded = DatasetVersion.objects.order_by("pk")
    assert [version.kind for version in loaded] == [k for k in HEADERS if manifest["files"][k]["rows"]]
    assert all(version.manifest == manifest for version in loaded)


def test_breakdown_rows_never_add_up_to_more_than_their_total_and_home_totals_are_presence(everyone_run):
    presence = rows(everyone_run.files["presence"])
    totals = {(r["cell"], r["hour"]): int(r["visits"]) for r in presence if r["age_band"] == r["gender"] == "*"}
    by_gender, by_age = {}, {}
    for r in presence:
        key = (r["cell"], r["hour"])
        if r["gender"] != "*":
            by_gender[key] = by_gender.get(key, 0) + int(r["visits"])
        elif r["age_band"] != "*":
            by_age[key] = by_age.get(key, 0) + int(r["visits"])
    home = rows(everyone_run.files["home"])
    home_totals = {(r["cell"], r["hour"]): int(r["visitors"]) for r in home if r["home_region"] == "*"}
    by_region = {}
    for r in home:
        if r["home_region"] != "*":
            by_region[(r["cell"], r["hour"])] = by_region.get((r["cell"], r["hour"]), 0) + int(r["visitors"])

    assert home_totals == totals
    for parts in (by_gender, by_age, by_region):
        assert all(key in totals and total <= totals[key] for key, total in parts.items())


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"min_subscribers": 1}, "threshold must be at least 2"),
        ({"days": 0}, "at least 1"),
        ({"opt_out": Path("/nonexistent/optout.json")}, "is not an optout_export file"),
    ],
)
def test_pipeline_run_refuses_bad_options_with_a_message(options, message, tmp_path):
    with pytest.raises(CommandError, match=message):
        call_command("pipeline_run", subscribers=10, out_dir=tmp_path / "out", work_dir=tmp_path / "work", **options)
