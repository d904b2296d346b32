"""What the release costs in accuracy (bench/accuracy): the error of released totals against
the true totals, for the demo city and the benchmark metro at size S.

For each city it uses a database of its own (footfall_accuracy for the demo city, built by
`manage.py generate_demo_city`; footfall_accuracy_metro_s for the metro, loaded from the
files bench/run generates), whose loaders built the release under the current policy (by
default k=10, rounded to 5, no noise). It then builds a second release of the same dataset
versions with sticky noise of --noise-scale people (2 by default) and measures both.

The measure: squares of 0.25, 1, 4 and 16 km² at random places inside the city (drawn off
the grid, so that edge cells count in part, as a customer's would) and the whole city; per
granularity (hour, day, week, local Europe/Berlin buckets over the city's whole local weeks):
- the released total is what a report shows: the engine's own sums of published values
  (insights.sums.cell_hour_sums, the area's cells weighted by their share inside it);
- the true total is the same area weighting over the loaded aggregates (the raw hourly
  tables, every value, withheld or not, of every grid cell under the area: also the cells
  that no report lists because none of their values was published);
- relative error |released - true| / true per bucket (and per segment) with a true total;
  a bucket with nothing published shows null to a buyer and counts as a 100 % error here;
- withheld cell-hours: the share of the cell-hours with a true value whose value was not
  published (each weighted by its cell's share inside the area);
- lost: 1 - Σ released / Σ true over all the buckets: the downward bias of withholding.

Products: footfall (person-hours of everyone, and per age band for the demo city, whose
presence has breakdowns), dwell (visits of everyone, and per dwell band), catchment
(person-hours of everyone per bucket, and per home region over the whole period).

It prints markdown tables, and the time each release took to build, per kind.
"""

import argparse
import datetime as dt
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
ACCURACY_DIR = ROOT / "var" / "accuracy"
BENCH_DIR = ROOT / "var" / "bench"
TIME_ZONE = "Europe/Berlin"
CITIES = {"demo": "footfall_accuracy", "metro-S": "footfall_accuracy_metro_s"}
POLICIES = ("default", "noise")
AREAS_KM2 = (0.25, 1.0, 4.0, 16.0)
GRANULARITIES = ("hour", "day", "week")
# (name, kind, breakdown or None, the metric) of what is measured.
MEASURES = (
    ("footfall", "presence", None, "person_hours"),
    ("footfall by age band", "presence", "age_band", "person_hours"),
    ("dwell", "dwell", None, "visits"),
    ("dwell by band", "dwell", "dwell_band", "visits"),
    ("catchment", "home", None, "person_hours"),
    ("catchment by home region", "home", "home_region", "person_hours"),
)


def psql_as_postgres(sql: str, database: str = "postgres") -> str:
    command = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-v", "ON_ERROR_STOP=1", "-qtA"]
    return subprocess.run([*command, "-c", sql], check=True, stdout=subprocess.PIPE, text=True).stdout.strip()


def city_environment(database: str) -> dict:
    return {
        **os.environ,
        "DATABASE_URL": f"postgis://root@127.0.0.1:5432/{database}",
        "DJANGO_SETTINGS_MODULE": "marketplace.settings",
        "REPORT_WARMUP_AREAS": "0",  # no buyer ordered from it: its loads queue no warm-up
    }


def database_prepare(database: str) -> None:
    """The city's database exists and is migrated (created from footfall_template, which has PostGIS)."""
    if not psql_as_postgres(f"SELECT 1 FROM pg_database WHERE datname = '{database}'"):
        psql_as_postgres(f"CREATE DATABASE {database} TEMPLATE footfall_template OWNER root")
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        check=True,
        env=city_environment(database),
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench/accuracy", description=__doc__.splitlines()[0])
    parser.add_argument("--cities", default=",".join(CITIES), help=f"comma-separated, of {', '.join(CITIES)}")
    parser.add_argument("--places", type=int, default=12, help="random squares per area size (default 12)")
    parser.add_argument("--seed", type=int, default=7, help="of the squares' places (default 7)")
    parser.add_argument("--noise-scale", type=float, default=2.0, help="of the noisy release (default 2)")
    parser.add_argument("--city", help=argparse.SUPPRESS)  # a worker: measure one city, print JSON
    args = parser.parse_args()
    if args.city:
        measure_city(args)
        return
    results = {}
    for city in args.cities.split(","):
        database = CITIES[city]
        database_prepare(database)
        print(f"{city}: measuring in {database}", file=sys.stderr)
        worker = [sys.executable, "-m", "bench.accuracy", "--city", city, "--places", str(args.places)]
        worker += ["--seed", str(args.seed), "--noise-scale", str(args.noise_scale)]
        answer = subprocess.run(
            worker, cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True, env=city_environment(database)
        )
        results[city] = json.loads(answer.stdout)
    ACCURACY_DIR.mkdir(parents=True, exist_ok=True)
    (ACCURACY_DIR / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print("\n".join(report_lines(results, args)))


# ---------------------------------------------------------------- the worker, one city


def measure_city(args) -> None:
    import django

    django.setup()
    from insights.models import DatasetVersion

    if not DatasetVersion.objects.exists():
        city_load(args.city)
    policies = city_policies(args.noise_scale)
    extent, start, end = city_extent()
    rng = random.Random(args.seed)
    areas = [("whole city", extent)]
    xmin, ymin, xmax, ymax = extent
    for area_km2 in AREAS_KM2:
        side = math.sqrt(area_km2) * 1000
        for _ in range(args.places):
            west, south = rng.uniform(xmin, xmax - side), rng.uniform(ymin, ymax - side)
            areas.append((f"{area_km2:g} km²", (west, south, west + side, south + side)))
    errors = {}
    started = time.perf_counter()
    for number, (label, bounds) in enumerate(areas, start=1):
        print(f"\r  {args.city}: area {number} of {len(areas)}", end="", file=sys.stderr, flush=True)
        for key, found in area_errors(bounds, start=start, end=end, policies=policies).items():
            pooled = errors.setdefault(f"{label}|{key}", empty_pool())
            for name, values in found.items():
                pooled[name] += values if isinstance(values, list) else [values]
    print(f"\r  {args.city}: {len(areas)} areas in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    json.dump(
        {
            "extent_km2": (xmax - xmin) * (ymax - ymin) / 1e6,
            "start": start.astimezone(ZoneInfo(TIME_ZONE)).date().isoformat(),
            "end": end.astimezone(ZoneInfo(TIME_ZONE)).date().isoformat(),
            "policies": {name: str(policy) for name, policy in policies.items()},
            "releases": release_times(policies),
            "errors": errors,
        },
        sys.stdout,
    )


def empty_pool() -> dict:
    return defaultdict(list)


def city_load(city: str) -> None:
    """Generate and load the city's data (the loaders build its release under the current policy)."""
    from django.core.management import call_command

    if city == "demo":
        call_command("generate_demo_city", out_dir=ACCURACY_DIR / "demo", stdout=sys.stderr)
        return
    from bench.metro_db import LOADED_PLACES
    from insights.kinds import KINDS, PRESENCE
    from insights.services import aggregates_load, regions_load
    from insights.synthetic.metro import metro_file_name, metro_places_names

    presence = BENCH_DIR / metro_file_name(size="S", seed=42, suffix=".csv")
    places = {name: BENCH_DIR / file for name, file in metro_places_names(size="S", seed=42).items()}
    if not presence.exists() or not all(path.exists() for path in places.values()):
        command = [sys.executable, "manage.py", "generate_metro", "--size", "S", "--seed", "42", "--csv"]
        subprocess.run([*command, "--out", str(BENCH_DIR)], cwd=ROOT, check=True, stdout=sys.stderr)
    regions_load(path=places["regions"])
    for kind, path in ((PRESENCE, presence), *((KINDS[name], places[name]) for name in LOADED_PLACES)):
        summary = aggregates_load(kind=kind, path=path)
        print(f"  loaded {summary.rows:,} {kind.name} rows", file=sys.stderr)


def city_policies(noise_scale: float) -> dict:
    """The current policy (released at load time), and the same with noise, released now."""
    from django.conf import settings

    from insights.models import ReleasePolicy
    from insights.releases import noise_key, release_policy_of_settings, releases_build

    default = release_policy_of_settings()
    releases_build(policy=default)  # versions loaded under another policy
    policies = {"default": default}
    for name, scale in (("noise", noise_scale),):
        policies[name], _ = ReleasePolicy.objects.get_or_create(
            k=settings.PRIVACY_K, round_to=settings.PRIVACY_ROUND_TO, noise_scale=scale, noise_key=noise_key()
        )
        releases_build(policy=policies[name])
    return policies


def release_times(policies: dict) -> dict:
    from insights.models import Release

    times = {}
    for name, policy in policies.items():
        for release in Release.objects.filter(policy=policy).select_related("dataset_version"):
            times.setdefault(name, {})[release.dataset_version.kind] = {
                "seconds": release.duration_seconds,
                "values": release.values,
                "released": release.released,
                "below_k": release.withheld_below_k,
                "complementary": release.withheld_complementary,
                "total_exact": release.total_exact,
                "total_released": release.total_released,
            }
    return times


def city_extent() -> tuple[tuple[float, float, float, float], dt.datetime, dt.datetime]:
    """The grid's extent in EPSG:3035 and the whole local weeks the presence covers."""
    from django.db import connection

    from insights.buckets import local_midnight
    from insights.models import DatasetVersion

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e)"
            " FROM (SELECT ST_Extent(geometry) AS e FROM insights_cell) extent"
        )
        extent = cursor.fetchone()
    zone = ZoneInfo(TIME_ZONE)
    versions = DatasetVersion.objects.filter(kind="presence")
    first = min(version.period_start for version in versions).astimezone(zone)
    last = max(version.period_end for version in versions).astimezone(zone)
    first_day = first.date() if first.time() == dt.time() else first.date() + dt.timedelta(days=1)
    first_day += dt.timedelta(days=-first_day.weekday() % 7)
    last_day = last.date() - dt.timedelta(days=last.date().weekday())
    return extent, local_midnight(first_day, zone), local_midnight(last_day, zone)


def area_errors(bounds, *, start: dt.datetime, end: dt.datetime, policies: dict) -> dict:
    """Per measure and granularity: the relative errors of the area's buckets (and segments),
    per policy, with the sums they come from."""
    from django.contrib.gis.geos import MultiPolygon, Polygon
    from django.db import connection

    from insights.areas import report_area
    from insights.kinds import KINDS
    from insights.models import DatasetVersion
    from insights.sums import cell_hour_sums

    box = Polygon.from_bbox(bounds)
    box.srid = 3035
    box.transform(4326)  # as a customer draws
    geometry = MultiPolygon(box, srid=4326)
    zone = ZoneInfo(TIME_ZONE)
    found = {}
    truth_cells(connection, geometry)
    with report_area(geometry):
        truth_cache = {}
        for name, kind_name, breakdown, _ in MEASURES:
            kind = KINDS[kind_name]
            version = DatasetVersion.objects.filter(kind=kind.name).latest("pk").pk
            if kind_name not in truth_cache:
                truth_cache[kind_name] = true_hours(connection, kind, start=start, end=end, version=version)
            hourly = truth_cache[kind_name]
            segment_position = list(kind.segments).index(breakdown) if breakdown else None
            granularities = ("period",) if breakdown == "home_region" else GRANULARITIES
            for granularity in granularities:
                truth = true_buckets(hourly, kind, breakdown, granularity, zone, start)
                if not truth["values"]:
                    continue  # nothing of this measure in the data (the metro has no age bands)
                key = f"{name}|{granularity}"
                for policy_name, policy in policies.items():
                    sums = cell_hour_sums(
                        kind=kind,
                        geometry=geometry,
                        start=start,
                        end=end,
                        granularity="week" if granularity == "period" else granularity,
                        time_zone=TIME_ZONE,
                        version=version,
                        policy=policy.pk,
                        breakdowns=(breakdown,) if breakdown else (),
                        over_period=granularity == "period",
                    ).by_bucket
                    published, released_weight = {}, 0.0
                    for (bucket, *codes), value in sums.items():
                        segment = codes[segment_position] if breakdown else 0
                        bucket_key = 0 if granularity == "period" else round(bucket.timestamp())
                        published[(bucket_key, segment)] = published.get((bucket_key, segment), 0.0) + value.value
                        released_weight += value.weight
                    errors = [
                        abs(published.get(key_, 0.0) - true) / true
                        for key_, true in truth["values"].items()
                        if true > 0
                    ]
                    entry = found.setdefault(key, {})
                    entry[f"{policy_name}_errors"] = errors
                    entry[f"{policy_name}_null"] = [
                        key_ not in published for key_, true in truth["values"].items() if true > 0
                    ]
                    entry[f"{policy_name}_true_sum"] = sum(truth["values"].values())
                    entry[f"{policy_name}_released_sum"] = sum(published.values())
                    # The measure's values (everyone's: its cell-hours; a breakdown's: its segments'),
                    # each weighted by its cell's share inside the area.
                    entry[f"{policy_name}_true_weight"] = truth["weight"]
                    entry[f"{policy_name}_released_weight"] = released_weight
    return found


# Every grid cell under the area with its share inside it, weighted as the engine weighs
# (insights.selectors: the share of the cell's area inside the area, in EPSG:3035, at least
# MIN_SHARE), but from the grid itself: insights_cell holds only the cells with a published
# value. A cell's id is its northing index × 100000 + its easting index (insights.grid).
TRUTH_CELLS = """
    CREATE TEMP TABLE truth_cells AS
    WITH area AS (SELECT ST_Transform(ST_GeomFromEWKB(%(geometry)s), 3035) AS g),
    grid AS (
        SELECT n, e, ST_MakeEnvelope(e * %(res)s, n * %(res)s, (e + 1) * %(res)s, (n + 1) * %(res)s, 3035) AS cell
        FROM area,
             generate_series(floor(ST_YMin(area.g) / %(res)s)::int, floor(ST_YMax(area.g) / %(res)s)::int) n,
             generate_series(floor(ST_XMin(area.g) / %(res)s)::int, floor(ST_XMax(area.g) / %(res)s)::int) e
    )
    SELECT n::bigint * 100000 + e AS cell_id, ST_Area(ST_Intersection(grid.cell, area.g)) / ST_Area(grid.cell) AS share
    FROM grid, area WHERE ST_Intersects(grid.cell, area.g)
"""


def truth_cells(connection, geometry) -> None:
    from django.conf import settings

    from insights.selectors import MIN_SHARE

    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS truth_cells")
        cursor.execute(TRUTH_CELLS, {"geometry": bytes(geometry.ewkb), "res": settings.GRID_RESOLUTION_M})
        cursor.execute("DELETE FROM truth_cells WHERE share < %s", [MIN_SHARE])
        cursor.execute("ANALYZE truth_cells")


def true_hours(connection, kind, *, start: dt.datetime, end: dt.datetime, version: int) -> list[tuple]:
    """The area's true hourly sums from the loaded aggregates, weighted as the engine weighs
    (truth_cells: every grid cell under the area and its share): (epoch, segment codes...,
    value, weight)."""
    segments = ", ".join(f"t.{name}" for name in kind.segments)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT extract(epoch FROM t.hour)::bigint, {segments}, sum(t.{kind.value} * c.share), sum(c.share)"
            f" FROM {kind.table} t JOIN truth_cells c USING (cell_id)"
            f" WHERE t.hour >= %(start)s AND t.hour < %(end)s AND t.dataset_version_id <= %(version)s"
            f" GROUP BY 1, {segments}",
            {"start": start, "end": end, "version": version},
        )
        return cursor.fetchall()


_BUCKETS: dict = {}


def bucket_of(epoch: int, granularity: str, zone: ZoneInfo, start: dt.datetime) -> int:
    """The start (epoch seconds) of the local bucket an hour falls in, as the engine keys it."""
    from insights.buckets import local_midnight

    if granularity == "hour":
        return epoch
    if granularity == "period":
        return 0
    key = (epoch, granularity)
    if key not in _BUCKETS:
        day = dt.datetime.fromtimestamp(epoch, zone).date()
        if granularity == "week":
            day -= dt.timedelta(days=day.weekday())
        _BUCKETS[key] = round(local_midnight(day, zone).timestamp())
    return _BUCKETS[key]


def true_buckets(hourly: list[tuple], kind, breakdown: str | None, granularity: str, zone: ZoneInfo, start) -> dict:
    """{(bucket, segment code): true sum} of the measure (everyone's when no breakdown, else
    each segment of the breakdown with the others at 0), and the weight of its values (the
    cell shares summed over its values: its cell-hours for everyone's)."""
    names = list(kind.segments)
    values: dict = defaultdict(float)
    weight = 0.0
    for epoch, *rest in hourly:
        codes, value, share = rest[: len(names)], rest[-2], rest[-1]
        if breakdown is None:
            if not any(codes):
                values[(bucket_of(epoch, granularity, zone, start), 0)] += value
                weight += share
            continue
        position = names.index(breakdown)
        others = [code for index, code in enumerate(codes) if index != position]
        if codes[position] > 0 and not any(others):
            values[(bucket_of(epoch, granularity, zone, start), codes[position])] += value
            weight += share
    return {"values": dict(values), "weight": weight}


# ---------------------------------------------------------------- the report


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]


def report_lines(results: dict, args) -> list[str]:
    lines = [
        f"Accuracy of released totals against the true totals ({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Squares of {', '.join(f'{a:g}' for a in AREAS_KM2)} km² at {args.places} random places each (seed"
        f" {args.seed}) and the whole city; buckets in {TIME_ZONE}. Error: |released − true| / true per bucket"
        " (and segment) with a true value; a bucket with nothing published (null) counts as 100 %."
        " Withheld: share of the measure's values (everyone's: cell-hours) that were not published, area-weighted."
        " Lost: 1 − Σreleased / Σtrue.",
        "",
    ]
    for city, result in results.items():
        policies = result["policies"]
        lines += [
            f"### {city} ({result['extent_km2']:.0f} km², local weeks from {result['start']} to {result['end']})",
            "",
            "; ".join(f"{name}: {policies[name]}" for name in POLICIES),
            "",
            "| measure | area | granularity | values | withheld | null |"
            + "".join(f" median, {name} | p95, {name} | lost, {name} |" for name in POLICIES),
            "| --- | --- | --- |" + " ---: |" * (3 + 3 * len(POLICIES)),
        ]
        for key, pooled in sorted(result["errors"].items(), key=row_order):
            area, measure, granularity = key.split("|")
            errors = pooled["default_errors"]
            if not errors:
                continue

            def share(released: str, true: str, pooled=pooled) -> float:
                return 1 - sum(pooled[released]) / sum(pooled[true]) if sum(pooled[true]) else 0.0

            row = (
                f"| {measure} | {area} | {granularity} | {len(errors):,}"
                f" | {percent(share('default_released_weight', 'default_true_weight'))}"
                f" | {percent(sum(pooled['default_null']) / len(errors))} |"
            )
            for name in POLICIES:
                found = pooled[f"{name}_errors"]
                row += (
                    f" {percent(statistics.median(found))} | {percent(percentile(found, 0.95))}"
                    f" | {percent(share(f'{name}_released_sum', f'{name}_true_sum'))} |"
                )
            lines.append(row)
        lines += ["", f"Release build times ({city}):", ""]
        lines += [
            "| policy | kind | build | values | released | withheld under k | withheld complementary"
            " | everyone released / exact |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for policy, kinds in result["releases"].items():
            for kind, release in sorted(kinds.items()):
                total = release["total_released"] / release["total_exact"] if release["total_exact"] else 0.0
                lines.append(
                    f"| {policy} | {kind} | {release['seconds']:.1f} s | {release['values']:,}"
                    f" | {release['released']:,}"
                    f" | {release['below_k']:,} | {release['complementary']:,} | {percent(total)} |"
                )
        lines.append("")
    return lines


def row_order(item: tuple[str, dict]) -> tuple:
    area, measure, granularity = item[0].split("|")
    measures = [name for name, *_ in MEASURES]
    size = math.inf if area == "whole city" else float(area.removesuffix(" km²"))
    return measures.index(measure), [*GRANULARITIES, "period"].index(granularity), size


def percent(value: float) -> str:
    value = max(value, 0.0) if abs(value) < 5e-5 else value  # no "-0.00 %"
    if value < 0.001:
        return f"{value * 100:.2f} %"
    return f"{value * 100:.1f} %" if value < 0.1 else f"{value * 100:.0f} %"


if __name__ == "__main__":
    main()
