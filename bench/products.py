"""The report benchmark (bench/run --size S|M|L): builds the synthetic metro at a size and
times the footfall, dwell, catchment, od-matrix and compare reports of three shapes (a
shopping centre, a district, the whole metro) in the engine, against the bare SQL floor and
DuckDB.

Reports read published values only: the release of each dataset version under the current
release policy (insights.releases). The loaders build a version's release in the load's own
transaction; the benchmark prints the load and the release build apart (the release's
duration_seconds, values released and withheld).

For each report it prints the engine's time (footfall_result, dwell_result and the others as
a worker runs them, with the current ReleasePolicy, in a process of its own, the median of
the timed runs) three ways: cold with a new area (the worker's caches of areas, decoded
months, releases and regions emptied and the area's stored cell weights dropped before each
run: an area the service has not seen, weighed in PostGIS), cold with a known area (the same
caches emptied, the area's cell weights read from where the run before stored them,
insights/areas.py: a worker's first report of an area the service has seen, as a buyer's
monthly order of the same shopping centre is) and warm (a repeated area: its months in memory),
the floor over the packed layout (one statement fetching, in binary, the packed rows of the
area's cells and months the report needs from insights_<kind>_released or its _day rollup,
and decoding and summing their values with numpy: the least any report over this layout
does), DuckDB over the same released hourly values (exported from PostgreSQL to Parquet once
per release, cell shares computed once in PostGIS, buckets in Europe/Berlin with DuckDB's
built-in ICU), the engine process's peak RSS, and whether all three return the same numbers:
the sums per bucket and per cell, per bucket and dwell band, per home region, per bucket and
zone pair (the SQL side of that check is one statement over the views that unpack the packed
rows, untimed). It also reports the load rates, the bytes stored per published value and
checks the targets.

It uses a database of its own per size (footfall_bench_s, _m, _l), which holds one seed at a
time, and keeps its files in var/bench/.
"""

import argparse
import dataclasses
import datetime as dt
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import django
import duckdb
import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from django.contrib.gis.geos import MultiPolygon, Polygon

from insights.kinds import KINDS, PRESENCE
from insights.synthetic.metro import (
    HAFEN_ARKADEN,
    ORIGIN_EAST,
    ORIGIN_NORTH,
    SIZES,
    YEAR_DAYS,
    Size,
    metro_file_name,
    metro_places_names,
)

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "var" / "bench"
TIME_ZONE = "Europe/Berlin"
SIZE_ORDER = ("S", "M", "L")
SAME_NUMBERS_RELATIVE = 1e-6

# Targets from the issue.
FASTER_THAN_DUCKDB = 3.0
WITHIN_SQL_FLOOR = 1.2
MAX_GROWTH = 1.3
MAX_WORKER_RSS_MB = 300
MIN_LOAD_ROWS_PER_S = 1_000_000
MAX_BYTES_PER_VALUE = 8

# The cells of an area with the share of each inside it, as the engine weighs them; materialized,
# so that each cell's share is computed once rather than again for each of its rows.
SHARES = """
    area AS (SELECT ST_Transform(ST_GeomFromEWKB(%(geometry)s), 3035) AS g),
    shares AS MATERIALIZED (
        SELECT c.id AS cell_id,
               CASE WHEN ST_Within(c.geometry, area.g) THEN 1.0
                    ELSE ST_Area(ST_Intersection(c.geometry, area.g)) / ST_Area(c.geometry) END AS share
        FROM insights_cell c JOIN area ON ST_Intersects(c.geometry, area.g)
    )
"""
# Per table of published values the engine's planner may read (insights_<kind>_released or
# its local day rollup), unpacked by its view (insights_<kind>_released_hours or _days): its
# suffix, its bucket column per granularity, its period filter and how many hourly values a row sums.
FLOOR_SOURCES = {
    "hour": ("_hours", {"hour": "t.hour"}, "t.hour >= %(start)s AND t.hour < %(end)s", "1"),
    "day": (
        "_days",
        {"day": "t.day", "week": "date_trunc('week', t.day)::date"},
        "t.day >= %(start_day)s AND t.day < %(end_day)s",
        "t.hours",
    ),
}
# The release of each dataset version up to the report's, under the current policy: what the engine reads.
RELEASED = "t.policy_id = %(policy)s AND t.dataset_version_id <= %(version)s"
FLOOR_FILTER = f"s.share >= %(min_share)s AND {RELEASED}"
# The packed columns a report over each source fetches (insights/packing.py).
PACKED = {"hour": ("", "t.published_hours, t.published_values"), "day": ("_day", "t.days, t.day_sums, t.day_hours")}
PACKED_KIND = {"footfall": "presence", "compare": "presence", "dwell": "dwell", "catchment": "home"}


def released(kind: str, suffix: str = "") -> str:
    return f"insights_{kind}_released{suffix}"


def packed_floor_sql(product: str, source: str) -> str:
    """The least any report over the packed layout reads, in one statement: the packed rows of
    the area's cells (or zones) and months, under the policy, of the segments the product sums."""
    suffix, columns = PACKED[source]
    months = "t.month >= %(first_month)s AND t.month < %(end_month)s"
    if product == "od-matrix":
        return (
            f"SELECT t.origin_id, t.destination, {columns} FROM {released('trips', suffix)} t"
            f" WHERE t.origin_id = ANY(%(zones)s) AND t.destination = ANY(%(zones)s) AND {months} AND {RELEASED}"
        )
    kind = PACKED_KIND[product]
    segments = " AND t.age_band = 0 AND t.gender = 0" if kind == "presence" else ""
    return (
        f"WITH {SHARES} SELECT t.cell_id, s.share, {columns}"
        f" FROM {released(kind, suffix)} t JOIN shares s USING (cell_id) WHERE {months} AND {FLOOR_FILTER}{segments}"
    )


def packed_floor(rows: list[tuple], source: str, *, weighted: bool) -> float:
    """What the floor does with its rows, (place, share or destination, packed columns...):
    decode every published value and sum it, weighted by its cell's share (numpy; no buckets,
    no result document). Returns the sum, so the work is not skipped."""
    from insights.packing import daily_values, hourly_values

    if not rows:
        return 0.0
    packed = [row[2:] for row in rows]
    if source == "hour":
        index, _, value = hourly_values([row[0] for row in packed], [row[1] for row in packed])
    else:
        index, _, value, _ = daily_values(*([row[column] for row in packed] for column in range(3)))
    if weighted:
        return float((value * np.array([row[1] for row in rows])[index]).sum())
    return float(value.sum())


def check_sql(product: str, source: str, granularity: str) -> str:
    """The product's sums in one statement over the unpacking views (untimed: the check of the
    engine's numbers, beside DuckDB's):
    footfall, the area's sums per bucket and per cell (for the map); dwell, those of
    everyone and the sums per bucket and band; catchment, those of everyone and the sums per
    home region over the period; od-matrix, the trips per bucket and pair of the zones. All of
    them over published values only, each sum with what a result states of its accuracy: how
    many hourly values were published, weighted by the cells' shares and not."""
    suffix, buckets, period, hours = FLOOR_SOURCES[source]
    bucket = buckets.get(granularity, buckets[source])
    published = f"sum({hours} * s.share), sum({hours})"
    if product == "footfall":
        return (
            f"WITH {SHARES} SELECT {bucket}, t.cell_id, sum(t.visits * s.share), {published}"
            f" FROM {released('presence', suffix)} t JOIN shares s USING (cell_id)"
            f" WHERE {period} AND {FLOOR_FILTER} AND t.age_band = 0 AND t.gender = 0"
            f" GROUP BY GROUPING SETS (({bucket}), (t.cell_id))"
        )
    if product == "dwell":
        # One scan: per bucket and band (everyone is band 0), and per cell and band (the map
        # shows everyone's).
        return (
            f"WITH {SHARES} SELECT {bucket}, t.cell_id, t.dwell_band, sum(t.visitors * s.share), {published}"
            f" FROM {released('dwell', suffix)} t JOIN shares s USING (cell_id)"
            f" WHERE {period} AND {FLOOR_FILTER}"
            f" GROUP BY GROUPING SETS (({bucket}, t.dwell_band), (t.cell_id, t.dwell_band))"
        )
    if product == "compare":
        # Both periods (the two halves of the report's span) in one scan: their buckets.
        return (
            f"WITH {SHARES} SELECT {bucket}, NULL::bigint, sum(t.visits * s.share), {published}"
            f" FROM {released('presence', suffix)} t JOIN shares s USING (cell_id)"
            f" WHERE {period} AND {FLOOR_FILTER} AND t.age_band = 0 AND t.gender = 0"
            f" GROUP BY {bucket}"
        )
    if product == "catchment":
        return (
            f"WITH {SHARES} SELECT {bucket}, t.cell_id, NULL::smallint, sum(t.visitors * s.share), {published}"
            f" FROM {released('home', suffix)} t JOIN shares s USING (cell_id)"
            f" WHERE {period} AND {FLOOR_FILTER} AND t.home_region = 0"
            f" GROUP BY GROUPING SETS (({bucket}), (t.cell_id))"
            f" UNION ALL SELECT NULL, NULL, t.home_region, sum(t.visitors * s.share), {published}"
            f" FROM {released('home', suffix)} t JOIN shares s USING (cell_id)"
            f" WHERE {period} AND {FLOOR_FILTER} AND t.home_region > 0"
            " GROUP BY t.home_region"
        )
    return (
        f"SELECT {bucket}, t.origin_id, t.destination, sum(t.trips), sum({hours}) FROM {released('trips', suffix)} t"
        f" WHERE t.origin_id = ANY(%(zones)s) AND t.destination = ANY(%(zones)s) AND {period}"
        f" AND {RELEASED} GROUP BY 1, 2, 3"
    )


def duckdb_sql(product: str, granularity: str) -> str:
    """The same over the released hourly values in DuckDB (exported from PostgreSQL: the
    presence's everyone rows, every published dwell, home and trips value); home regions and
    zones by region id, as in PostgreSQL."""
    bucket = {"hour": "p.hour", "day": "date_trunc('day', p.hour)", "week": "date_trunc('week', p.hour)"}[granularity]
    period = "p.hour >= $start::TIMESTAMPTZ AND p.hour < $end::TIMESTAMPTZ"
    published = "sum(s.share), count(*)"  # what a result states of its accuracy, as in check_sql
    if product == "footfall":
        return (
            f"SELECT epoch({bucket}) AS bucket, p.cell_id, sum(p.visits * s.share), {published}"
            f" FROM presence p JOIN shares s USING (cell_id) WHERE {period}"
            " GROUP BY GROUPING SETS ((bucket), (p.cell_id))"
        )
    if product == "dwell":
        return (
            f"SELECT epoch({bucket}) AS bucket, p.cell_id, p.dwell_band, sum(p.visitors * s.share), {published}"
            f" FROM dwell p JOIN shares s USING (cell_id) WHERE {period}"
            " GROUP BY GROUPING SETS ((bucket, p.dwell_band), (p.cell_id, p.dwell_band))"
        )
    if product == "compare":
        return (
            f"SELECT epoch({bucket}) AS bucket, NULL::BIGINT, sum(p.visits * s.share), {published}"
            f" FROM presence p JOIN shares s USING (cell_id) WHERE {period} GROUP BY bucket"
        )
    if product == "catchment":
        return (
            f"SELECT epoch({bucket}) AS bucket, p.cell_id, NULL::SMALLINT, sum(p.visitors * s.share), {published}"
            f" FROM home p JOIN shares s USING (cell_id) WHERE {period} AND p.home_region = 0"
            " GROUP BY GROUPING SETS ((bucket), (p.cell_id))"
            f" UNION ALL SELECT NULL, NULL, p.home_region, sum(p.visitors * s.share), {published}"
            f" FROM home p JOIN shares s USING (cell_id) WHERE {period} AND p.home_region > 0"
            " GROUP BY p.home_region"
        )
    return (
        f"SELECT epoch({bucket}) AS bucket, p.origin_id, p.destination, sum(p.trips), count(*) FROM trips p"
        f" WHERE p.origin_id IN (SELECT zone FROM zones) AND p.destination IN (SELECT zone FROM zones) AND {period}"
        " GROUP BY 1, 2, 3"
    )


# The kinds loaded from the files written beside the presence file.
LOADED_PLACES = ("home", "trips", "dwell")
ADVERB = {"hour": "hourly", "day": "daily", "week": "weekly"}
PRODUCTS = ("footfall", "dwell", "catchment", "od-matrix", "compare")
# Nothing may be downloaded: ICU (time zones) and Parquet are linked into the duckdb wheel.
DUCKDB_CONFIG = {"autoinstall_known_extensions": False}


@dataclasses.dataclass(frozen=True)
class Report:
    product: str
    shape: str
    granularity: str
    days: int
    # west, south, east, north in km from the metro's south-west corner; None: the size's whole window.
    bounds_km: tuple[float, float, float, float] | None

    def bounds(self, size: Size) -> tuple[float, float, float, float]:
        if self.bounds_km is None:
            return size.west_km, size.south_km, size.west_km + size.width_km, size.south_km + size.height_km
        return self.bounds_km

    def fits(self, size: Size) -> bool:
        west, south, east, north = self.bounds(size)
        inside = (
            size.west_km <= west
            and east <= size.west_km + size.width_km
            and size.south_km <= south
            and north <= size.south_km + size.height_km
        )
        return inside and self.days <= size.days

    def area_km2(self, size: Size) -> float:
        west, south, east, north = self.bounds(size)
        return (east - west) * (north - south)

    @property
    def name(self) -> str:
        return f"{self.product}: {self.shape}"


@dataclasses.dataclass
class Outcome:
    report: Report
    area_km2: float
    places: int  # cells, or zones for od-matrix
    buckets: int
    engine_s: float  # warm: the area's cells and months kept from the run before
    engine_cold_s: float  # the worker's caches emptied first: a known area, its stored cell weights read
    engine_cold_new_s: float  # a new area: the caches emptied and the area's stored weights dropped first
    floor_s: float
    duckdb_s: float
    started_rss_mb: float
    peak_rss_mb: float
    worst_relative_difference: float


def square_km(east_km: float, north_km: float, side_km: float) -> tuple[float, float, float, float]:
    half = side_km / 2
    return east_km - half, north_km - half, east_km + half, north_km + half


SHAPES = (
    # Drawn off the grid lines, as a customer would: the edge cells count in part.
    ("shopping centre", "hour", 90, square_km(HAFEN_ARKADEN.east_km, HAFEN_ARKADEN.north_km, 1.0)),
    ("district", "day", YEAR_DAYS, square_km(18.1, 15.1, 8.0)),
    ("whole metro", "week", YEAR_DAYS, None),
)
# compare: the first half of the span against the second; the shopping centre's halves are
# five weeks each, clear of the change to summer time, so that they hold as many hours.
COMPARE_SHAPES = (("shopping centre", "hour", 70, SHAPES[0][3]), *SHAPES[1:])
REPORTS = tuple(
    Report(product, *shape) for product in PRODUCTS for shape in (COMPARE_SHAPES if product == "compare" else SHAPES)
)


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.splitlines()[0])
    parser.add_argument("--size", required=True, choices=SIZE_ORDER)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per report, after one warm-up (default 5)")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="TEXT",
        help="time only the reports whose name holds TEXT, e.g. 'catchment: shopping' (repeatable); nothing is saved",
    )
    args = parser.parse_args()
    database = bench_database(args.size)
    # Everything this runs, the processes it starts too, uses the bench database, never the development one.
    os.environ["DATABASE_URL"] = f"postgis://root@127.0.0.1:5432/{database}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "marketplace.settings")
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    size = SIZES[args.size]
    parquet = BENCH_DIR / metro_file_name(size=size.name, seed=args.seed)
    # The presence is loaded from CSV, as operators deliver it; the other kinds from Parquet.
    presence_csv = BENCH_DIR / metro_file_name(size=size.name, seed=args.seed, suffix=".csv")
    places = {name: BENCH_DIR / file for name, file in metro_places_names(size=size.name, seed=args.seed).items()}

    lines = [f"Report benchmark, size {size.name}, seed {args.seed}, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"]
    lines += machine_lines(args.runs) + sizes_lines()
    lines.append(generate([parquet, presence_csv, *places.values()], size=size.name, seed=args.seed))
    loaded = (presence_csv, *(places[name] for name in LOADED_PLACES))
    database_prepare(database, {file_sha256(path) for path in loaded})
    django.setup()
    load_lines, load_rate = load(database, presence_csv, places)
    lines += load_lines
    storage = stored_bytes(database)
    lines += storage_lines(storage)
    store, duckdb_lines = duckdb_store(database, size=size.name, seed=args.seed)
    lines += duckdb_lines
    outcomes = [
        measure(report, size=size, database=database, store=store, runs=args.runs)
        for report in REPORTS
        if report.fits(size) and (not args.only or any(text in report.name for text in args.only))
    ]
    lines += [
        "",
        *outcome_lines(outcomes),
        "",
        *verdict_lines(outcomes, size=size.name, seed=args.seed, load_rate=load_rate, storage=storage),
    ]
    if not args.only:  # the growth check reads a whole run's results
        results_save(outcomes, size=size.name, seed=args.seed)
    print("\n".join(lines))
    if any(outcome.worst_relative_difference > SAME_NUMBERS_RELATIVE for outcome in outcomes):
        sys.exit("the engine, the SQL floor and DuckDB disagree: see 'same numbers' above")


def machine_lines(runs: int) -> list[str]:
    postgres = psql_as_postgres("SHOW server_version")
    return [
        f"  machine: {os.cpu_count()} cores, {platform.machine()}, PostgreSQL {postgres}, DuckDB {duckdb.__version__}"
        " (ICU time zones built in, nothing downloaded)",
        f"  load average at the start: {os.getloadavg()[0]:.1f} (other processes' share of the {os.cpu_count()} cores"
        " shows in the figures)",
        f"  times: median of {runs} runs after a warm-up, engine (cold with a new area, cold with a known area, then"
        " warm), floor and DuckDB taking turns; cold: the worker's caches of areas, decoded months, releases and"
        " regions emptied first, and for a new area its stored cell weights dropped (weighed in PostGIS again),"
        " for a known area read from the database; warm: the same area again",
    ]


def sizes_lines() -> list[str]:
    lines = ["", "Sizes (windows of one metro in space and time):"]
    for name in SIZE_ORDER:
        size = SIZES[name]
        holds = ", ".join(dict.fromkeys(report.shape for report in REPORTS if report.fits(size)))
        lines.append(
            f"  {name}  {size.width_km:g} km × {size.height_km:g} km, {size.cells:>6,} cells,"
            f" {size.days:>3} days from {size.first_day}: {holds}"
        )
    return lines + [""]


def generate(files: list[Path], *, size: str, seed: int) -> str:
    if all(path.exists() for path in files):
        return f"Generate: {files[0].relative_to(ROOT)} and the files beside it exist (generated by an earlier run)"
    command = [sys.executable, "manage.py", "generate_metro", "--size", size, "--seed", str(seed), "--csv"]
    command += ["--out", BENCH_DIR]
    started = time.perf_counter()
    written = subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True).stdout.strip()
    written = "\n  ".join(line.removeprefix("wrote ") for line in written.splitlines())
    return f"Generate ({time.perf_counter() - started:.1f} s with start-up):\n  {written}"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as content:
        for block in iter(lambda: content.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def psql_as_postgres(sql: str) -> str:
    command = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-qtA"]
    return subprocess.run([*command, "-c", sql], check=True, capture_output=True, text=True).stdout.strip()


def bench_database(size: str) -> str:
    return f"footfall_bench_{size.lower()}"


def conninfo(database: str) -> str:
    # As the engine's connections are (marketplace/settings.py): JIT only slowed these queries.
    return f"host=127.0.0.1 port=5432 user=root dbname={database} options='-c jit=off'"


def database_create(database: str) -> None:
    psql_as_postgres(f"CREATE DATABASE {database} TEMPLATE footfall_template OWNER root")
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, check=True)


def database_prepare(database: str, file_sha256s: set[str]) -> None:
    """The size's database exists, is migrated and holds no data but these files': one seed at a time."""
    if not psql_as_postgres(f"SELECT 1 FROM pg_database WHERE datname = '{database}'"):
        database_create(database)
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, check=True)
    with psycopg.connect(conninfo(database)) as connection:
        loaded = {sha for (sha,) in connection.execute("SELECT sha256 FROM insights_datasetversion")}
    if loaded - file_sha256s:
        print(f"{database} holds other files (another seed, or an earlier format): creating it afresh", file=sys.stderr)
        psql_as_postgres(f"DROP DATABASE {database}")
        database_create(database)


def load(database: str, presence_csv: Path, places: dict[str, Path]) -> tuple[list[str], float]:
    """Load the districts, then the presence (CSV), home, trips and dwell (Parquet) files as the
    loader does; the rate is that of each file's load, in this run or an earlier one, without
    the release the loader builds in the same transaction (printed apart: its build time and
    what it released and withheld). Returns the presence's rate too."""
    from insights.models import DatasetVersion, Release
    from insights.releases import release_analyze, release_build, release_policy_of_settings
    from insights.services import aggregates_load, regions_load

    def progress(rows: int) -> None:
        print(f"\r  loading: {rows:>12,} rows read", end="", file=sys.stderr, flush=True)

    districts = regions_load(path=places["regions"])
    policy = release_policy_of_settings()
    lines = [f"Load (regions_load): {districts.created + districts.updated} districts", f"Release policy: {policy}"]
    releases, rates = [], {}
    for kind, path in ((PRESENCE, presence_csv), *((KINDS[name], places[name]) for name in LOADED_PLACES)):
        started = time.perf_counter()
        summary = aggregates_load(kind=kind, path=path, on_progress=progress)
        wall_s = time.perf_counter() - started
        print(file=sys.stderr)
        rates[kind.name] = rate = summary.rows / summary.duration_seconds
        line = (
            f"Load ({kind.name}, {path.suffix[1:]}): {summary.rows:,} rows, {summary.cells:,} places"
            f" in {summary.duration_seconds:.1f} s"
            f" = {rate / 1000:,.0f}k rows/s"
        )
        release, built_now = summary.release, not summary.already_loaded
        if release is None:
            release = Release.objects.filter(dataset_version_id=summary.version, policy=policy).first()
        if release is None:  # loaded by an earlier run under another policy
            release = release_build(version=DatasetVersion.objects.get(pk=summary.version), policy=policy)
            release_analyze(kind=kind)
            built_now = True
        releases.append((kind, release, built_now))
        if summary.already_loaded:
            lines.append(f"{line} (the earlier run's load of the same file)")
        else:
            lines.append(f"{line} ({wall_s:.1f} s with hashing the file, the release and ANALYZE)")
        if built_now:
            # Leave the tables as autovacuum would (hint bits, visibility map, statistics of the new
            # cells too), so that it does not do so during the timings.
            with psycopg.connect(conninfo(database), autocommit=True) as bench:
                tables = ", ".join([kind.raw_table, *(released(kind.name, suffix) for suffix in ("", "_day"))])
                bench.execute(f"VACUUM (ANALYZE) insights_cell, {tables}")
    return lines + release_lines(releases), rates["presence"]


def release_lines(releases: list) -> list[str]:
    """Each kind's release: its build time (in the load's transaction, after the rows are in)
    and what it released and withheld."""
    header = (
        f"  {'kind':<9} {'build':>8} {'values':>11} {'released':>11} {'under k':>10} {'complem.':>10}"
        f" {'everyone released/exact':>24}"
    )
    lines = ["", "Release build (per kind, in the load's transaction, timed apart from the load):", header]
    for kind, release, built_now in releases:
        share = release.total_released / release.total_exact if release.total_exact else 0.0
        lines.append(
            f"  {kind.name:<9} {release.duration_seconds:>6.1f} s {release.values:>11,}"
            f" {release.released:>11,} {release.withheld_below_k:>10,} {release.withheld_complementary:>10,}"
            f" {share:>23.1%}" + ("" if built_now else "  (built by an earlier run)")
        )
    return lines + [""]


def stored_bytes(database: str) -> dict[str, dict]:
    """Per kind, the bytes on disk (tables, TOAST and indexes) of its loaded aggregates and of its
    release under the current policy (the packed hourly table and the day rollup), with the values
    each holds."""
    from insights.models import Release
    from insights.selectors import current_release_policy

    policy = current_release_policy()
    found = {}
    with psycopg.connect(conninfo(database)) as connection:

        def size_of(table: str) -> int:
            partitions = "SELECT inhrelid FROM pg_inherits WHERE inhparent = %(table)s::regclass"
            return connection.execute(
                f"SELECT coalesce(sum(pg_total_relation_size(relid)), 0)::bigint FROM"
                f" (SELECT %(table)s::regclass AS relid UNION ALL {partitions}) tables",
                {"table": table},
            ).fetchone()[0]

        for kind in KINDS.values():
            releases = Release.objects.filter(policy=policy, dataset_version__kind=kind.name)
            if not releases.exists():
                continue
            found[kind.name] = {
                "raw_bytes": size_of(kind.raw_table),
                "raw_values": sum(release.values for release in releases),
                "hourly_bytes": size_of(released(kind.name)),
                "day_bytes": size_of(released(kind.name, "_day")),
                "released_bytes": size_of(released(kind.name)) + size_of(released(kind.name, "_day")),
                "released_values": sum(release.released for release in releases),
                "rows": connection.execute(f"SELECT count(*) FROM {released(kind.name)}").fetchone()[0],
            }
    return found


def storage_lines(storage: dict[str, dict]) -> list[str]:
    lines = [
        "Storage (tables, TOAST and indexes; per value: per published value of the release, per loaded value of the"
        " aggregates, packed by place and day):",
        f"  {'kind':<9} {'release':>10} {'hourly':>10} {'day':>9} {'published':>12} {'per value':>9}"
        f" {'values/row':>10} {'aggregates':>11} {'per value':>9}",
    ]
    for kind, stored in storage.items():
        values = max(stored["released_values"], 1)
        lines.append(
            f"  {kind:<9} {stored['released_bytes'] / 1e6:>7.1f} MB {stored['hourly_bytes'] / 1e6:>7.1f} MB"
            f" {stored['day_bytes'] / 1e6:>6.1f} MB {stored['released_values']:>12,}"
            f" {stored['released_bytes'] / values:>7.2f} B {stored['released_values'] / max(stored['rows'], 1):>10.1f}"
            f" {stored['raw_bytes'] / 1e6:>8.1f} MB {stored['raw_bytes'] / max(stored['raw_values'], 1):>7.1f} B"
        )
    return lines + [""]


# The released hourly values exported for DuckDB: per kind, its table, columns and filter.
EXPORTS = {
    "presence": ("cell_id, hour, visits", "age_band = 0 AND gender = 0"),
    "dwell": ("cell_id, hour, dwell_band, visitors", "true"),
    "home": ("cell_id, hour, home_region, visitors", "true"),
    "trips": ("origin_id, destination, hour, trips", "true"),
}
EXPORT_TYPES = {
    "cell_id": pa.int64(),
    "origin_id": pa.int16(),
    "destination": pa.int16(),
    "dwell_band": pa.int16(),
    "home_region": pa.int16(),
    "visits": pa.int64(),
    "visitors": pa.int64(),
    "trips": pa.int64(),
}


def release_fingerprint(database: str) -> str:
    """What the released values depend on: the loaded files, the current policy and the
    releases themselves (a release built again, by a newer builder, is another release)."""
    from insights.selectors import current_release_policy

    policy = current_release_policy()
    with psycopg.connect(conninfo(database)) as connection:
        files = sorted(sha for (sha,) in connection.execute("SELECT sha256 FROM insights_datasetversion"))
        releases = connection.execute(
            "SELECT id, built_at::text FROM insights_release WHERE policy_id = %s ORDER BY id", [policy.pk]
        ).fetchall()
    described = json.dumps([files, policy.k, policy.round_to, policy.noise_scale, policy.noise_key, releases])
    return hashlib.sha256(described.encode()).hexdigest()[:12]


def released_parquet(database: str, kind: str, path: Path) -> int:
    """The kind's released hourly values under the current policy, from PostgreSQL to Parquet
    (hours as UTC instants): what DuckDB reads. Returns the rows written."""
    from insights.selectors import current_release_policy

    columns, where = EXPORTS[kind]
    names = [name.strip() for name in columns.split(",")]
    selected = ", ".join("extract(epoch FROM hour)::bigint" if name == "hour" else name for name in names)
    policy = current_release_policy().pk
    query = f"SELECT {selected} FROM {released(kind, '_hours')} WHERE policy_id = {policy} AND {where} ORDER BY 1, 2"
    buffer = bytearray()
    with psycopg.connect(conninfo(database)) as connection, connection.cursor() as cursor:
        with cursor.copy(f"COPY ({query}) TO STDOUT (FORMAT csv)") as copy:
            for block in copy:
                buffer += block
    types = {name: pa.int64() if name == "hour" else EXPORT_TYPES[name] for name in names}
    table = pacsv.read_csv(
        pa.py_buffer(bytes(buffer)),
        read_options=pacsv.ReadOptions(column_names=names),
        convert_options=pacsv.ConvertOptions(column_types=types),
    )
    hours = table["hour"].cast(pa.timestamp("s", tz="UTC"))
    table = table.set_column(names.index("hour"), "hour", hours)
    pq.write_table(table, path)
    return table.num_rows


def duckdb_store(database: str, *, size: str, seed: int) -> tuple[Path, list[str]]:
    """A DuckDB database of the released hourly values, keyed like the engine's tables (cell
    ids, region ids), from Parquet files exported from PostgreSQL; built once per release."""
    fingerprint = release_fingerprint(database)
    store = BENCH_DIR / f"metro-{size}-seed{seed}-released-{fingerprint}.duckdb"
    if store.exists():
        return store, [f"DuckDB: {store.relative_to(ROOT)} exists (built by an earlier run from the same release)"]
    lines = []
    started = time.perf_counter()
    files = {}
    for kind in EXPORTS:
        files[kind] = BENCH_DIR / f"metro-{size}-seed{seed}-released-{fingerprint}-{kind}.parquet"
        rows = released_parquet(database, kind, files[kind])
        lines.append(f"  {rows:>11,} released {kind} rows to {files[kind].relative_to(ROOT)}")
    exported_s = time.perf_counter() - started
    building = store.with_name(store.name + ".partial")
    building.unlink(missing_ok=True)
    started = time.perf_counter()
    rows = 0
    with duckdb.connect(str(building), config=DUCKDB_CONFIG) as duck:
        for kind, path in files.items():
            rows += duck.execute(f"CREATE TABLE {kind} AS SELECT * FROM read_parquet('{path}')").fetchone()[0]
    building.rename(store)
    return store, [
        f"Export of the released values to Parquet ({exported_s:.1f} s):",
        *lines,
        f"DuckDB: {rows:,} released rows loaded from those Parquet files in {time.perf_counter() - started:.1f} s",
    ]


def measure(report: Report, *, size: Size, database: str, store: Path, runs: int) -> Outcome:
    # The engine's modules need Django set up first.
    from insights.buckets import buckets, local_midnight
    from insights.models import DatasetVersion
    from insights.products import PRODUCTS
    from insights.selectors import MIN_SHARE, current_release_policy, regions_in_area
    from insights.sums import presence_source

    print(f"  timing the {report.name} report", file=sys.stderr)
    west, south, east, north = report.bounds(size)
    box = Polygon.from_bbox(
        (ORIGIN_EAST + west * 1000, ORIGIN_NORTH + south * 1000, ORIGIN_EAST + east * 1000, ORIGIN_NORTH + north * 1000)
    )
    box.srid = 3035
    box.transform(4326)  # customers draw in longitude/latitude
    geometry = MultiPolygon(box, srid=4326)
    zone = ZoneInfo(TIME_ZONE)
    start = size.start()
    end = dt.datetime.combine(size.first_day + dt.timedelta(days=report.days), dt.time(), tzinfo=zone).astimezone(
        dt.UTC
    )
    version = DatasetVersion.objects.filter(kind=PRODUCTS[report.product].kind.name).latest("pk").pk
    policy = current_release_policy().pk
    source = presence_source(granularity=report.granularity, time_zone=TIME_ZONE)
    zones = {region.id: region.code for region in regions_in_area(geometry=geometry)}
    floor_parameters = {
        "geometry": bytes(geometry.ewkb),
        "min_share": MIN_SHARE,
        "start": start,
        "end": end,
        "start_day": start.astimezone(zone).date(),
        "end_day": end.astimezone(zone).date(),
        **packed_months(source, start, end, zone),
        "version": version,
        "policy": policy,
        "zones": list(zones),
    }
    engine = EngineProcess(
        {
            "product": report.product,
            "geometry_hexewkb": geometry.hexewkb.decode(),
            "start": start.isoformat(),
            "end": end.isoformat(),
            "granularity": report.granularity,
            "time_zone": TIME_ZONE,
            "version": version,
            "policy": policy,
            "middle": local_midnight(size.first_day + dt.timedelta(days=report.days // 2), zone).isoformat(),
        }
    )
    times = {"engine": [], "engine_cold": [], "engine_cold_new": [], "floor": [], "duckdb": []}
    with (
        psycopg.connect(conninfo(database)) as floor,
        duckdb.connect(str(store), read_only=True, config=DUCKDB_CONFIG) as duck,
    ):
        shares = floor.execute(
            f"WITH {SHARES} SELECT cell_id, share FROM shares WHERE share >= %(min_share)s", floor_parameters
        ).fetchall()
        duck.register("area_shares", pa.table({"cell_id": [c for c, _ in shares], "share": [s for _, s in shares]}))
        duck.execute("CREATE TEMP TABLE shares AS SELECT * FROM area_shares")
        duck.register("area_zones", pa.table({"zone": pa.array(list(zones), pa.int16())}))
        duck.execute("CREATE TEMP TABLE zones AS SELECT * FROM area_zones")
        duck.execute(f"SET TimeZone = '{TIME_ZONE}'")
        floor_query = packed_floor_sql(report.product, source)
        duckdb_query = duckdb_sql(report.product, report.granularity)
        duckdb_parameters = {"start": start.isoformat(), "end": end.isoformat()}
        floor_rows = floor.execute(check_sql(report.product, source, report.granularity), floor_parameters).fetchall()
        for run in range(runs + 1):  # the first is a warm-up
            engine_cold_new_s = engine.time_report(cold=True, new_area=True)
            engine_cold_s = engine.time_report(cold=True)
            engine_s = engine.time_report()
            floor_s, _ = timed(
                lambda: packed_floor(
                    floor.execute(floor_query, floor_parameters, binary=True).fetchall(),
                    source,
                    weighted=report.product != "od-matrix",  # trips are counted whole, cells by their share
                )
            )
            duckdb_s, duckdb_rows = timed(lambda: duck.execute(duckdb_query, duckdb_parameters).fetchall())
            if run:
                times["engine"].append(engine_s)
                times["engine_cold"].append(engine_cold_s)
                times["engine_cold_new"].append(engine_cold_new_s)
                times["floor"].append(floor_s)
                times["duckdb"].append(duckdb_s)
    engine_sums = engine.sums()
    started_rss_mb, peak_rss_mb = engine.finish()
    if report.product == "od-matrix":
        found = {
            "engine": {"flows": dict(engine_sums["flows"])},
            "floor": {"flows": flow_sums(floor_rows, lambda b: bucket_epoch(b, zone), lambda z: zones[z])},
            "duckdb": {"flows": flow_sums(duckdb_rows, round, lambda z: zones[z])},
        }
    elif report.product == "dwell":
        found = {
            "engine": {
                "series": {round(bucket): visits for bucket, visits in engine_sums["series"]},
                "cells": {cell_id: visits for cell_id, visits in engine_sums["cells"] if visits},
                "bands": dict(engine_sums["bands"]),
            },
            "floor": band_sums(floor_rows, lambda b: bucket_epoch(b, zone)),
            "duckdb": band_sums(duckdb_rows, round),
        }
    else:
        found = {
            "engine": {
                "series": {round(bucket): person_hours for bucket, person_hours in engine_sums["series"]},
                # The engine lists every covered cell; one without published values in the period sums to 0.
                "cells": {cell_id: person_hours for cell_id, person_hours in engine_sums["cells"] if person_hours},
                "regions": dict(engine_sums.get("regions", [])),
            },
            "floor": split_sums(floor_rows, lambda b: bucket_epoch(b, zone), region_codes_by_id()),
            "duckdb": split_sums(duckdb_rows, round, region_codes_by_id()),
        }
    return Outcome(
        report=report,
        area_km2=report.area_km2(size),
        places=len(zones) if report.product == "od-matrix" else len(shares),
        buckets=len(list(buckets(start, end, report.granularity, zone))),
        engine_s=statistics.median(times["engine"]),
        engine_cold_s=statistics.median(times["engine_cold"]),
        engine_cold_new_s=statistics.median(times["engine_cold_new"]),
        floor_s=statistics.median(times["floor"]),
        duckdb_s=statistics.median(times["duckdb"]),
        started_rss_mb=started_rss_mb,
        peak_rss_mb=peak_rss_mb,
        worst_relative_difference=max(
            relative_difference(found["engine"][name], found[other][name])
            for name in found["engine"]
            for other in ("floor", "duckdb")
        ),
    )


def packed_months(source: str, start: dt.datetime, end: dt.datetime, zone: ZoneInfo) -> dict:
    """The packed months a report reads: UTC months of the hourly table, local ones of the day rollup."""
    if source == "hour":
        first = start.astimezone(dt.UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        return {"first_month": first, "end_month": end}
    return {"first_month": start.astimezone(zone).date().replace(day=1), "end_month": end.astimezone(zone).date()}


def region_codes_by_id() -> dict[int, str]:
    from insights.models import Region

    return dict(Region.objects.values_list("id", "code"))


class EngineProcess:
    """bench/engine_report.py running one report in a fresh process."""

    def __init__(self, report: dict):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.engine_report", json.dumps(report)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.started_rss_mb = self._answer()["started_rss_mb"]

    def time_report(self, *, cold: bool = False, new_area: bool = False) -> float:
        """One run's seconds; cold: with the worker's caches emptied first; new_area: and the
        area's stored cell weights dropped."""
        return self._ask(("cold-new" if new_area else "cold") if cold else "run")["seconds"]

    def sums(self) -> dict[str, list]:
        """The engine's sums of published values: "series", [bucket epoch, sum], and "cells", [cell id, sum]."""
        return self._ask("sums")

    def finish(self) -> tuple[float, float]:
        """Its RSS when started and its peak RSS."""
        self.process.stdin.close()
        peak_rss_mb = self._answer()["peak_rss_mb"]
        self.process.wait()
        return self.started_rss_mb, peak_rss_mb

    def _ask(self, command: str) -> dict:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._answer()

    def _answer(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            sys.exit(f"the engine process ended early (exit status {self.process.wait()}); its error is above")
        return json.loads(line)


def timed(work):
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


def split_sums(rows: list[tuple], bucket_key, region_code: dict[int, str]) -> dict[str, dict]:
    """Rows (bucket, cell, [home region,] sum), one of the keys set, into the sums by bucket key,
    by cell and by region code."""
    sums = {"series": {}, "cells": {}, "regions": {}}
    for bucket, cell_id, *region, value, _weight, _count in rows:
        if bucket is not None:
            sums["series"][bucket_key(bucket)] = value
        elif cell_id is not None:
            sums["cells"][cell_id] = value
        else:
            sums["regions"][region_code[region[0]]] = value
    return sums


def band_sums(rows: list[tuple], bucket_key) -> dict[str, dict]:
    """Rows (bucket, cell, band, sum), bucket or cell set, into everyone's sums (band 0) by
    bucket key and by cell, and the bands' by "bucket band"."""
    sums = {"series": {}, "cells": {}, "bands": {}}
    for bucket, cell_id, band, visits, _weight, _count in rows:
        if bucket is None:
            if band == 0 and visits:
                sums["cells"][cell_id] = visits
        elif band == 0:
            sums["series"][bucket_key(bucket)] = visits
        else:
            sums["bands"][f"{bucket_key(bucket)} {band}"] = visits
    return sums


def flow_sums(rows: list[tuple], bucket_key, zone_code) -> dict[str, int]:
    """Rows (bucket, origin, destination, trips) keyed as the engine process keys them."""
    return {f"{bucket_key(bucket)} {zone_code(o)} {zone_code(d)}": int(trips) for bucket, o, d, trips, _count in rows}


def bucket_epoch(bucket: dt.datetime | dt.date, zone: ZoneInfo) -> int:
    """Epoch seconds of an hour, or of the local midnight that starts a day or week."""
    if isinstance(bucket, dt.datetime):
        return round(bucket.timestamp())
    return round(dt.datetime.combine(bucket, dt.time(), tzinfo=zone).timestamp())


def relative_difference(expected: dict[int, float], actual: dict[int, float]) -> float:
    """The largest relative difference between two series of bucket sums; infinite if their buckets differ."""
    if expected.keys() != actual.keys():
        return float("inf")
    return max((abs(actual[bucket] - value) / max(abs(value), 1.0) for bucket, value in expected.items()), default=0.0)


def outcome_lines(outcomes: list[Outcome]) -> list[str]:
    header = (
        f"{'report':<44} {'area':>9} {'places':>6} {'buckets':>7} {'cold, new':>9} {'cold, seen':>10} {'warm':>9}"
        f" {'SQL floor':>9} {'DuckDB':>9} {'floor: new/seen/warm':>22} {'DuckDB/engine: new/seen/warm':>30}"
        f" {'worker RSS':>10}  same numbers"
    )
    lines = [header, "-" * len(header)]
    for outcome in outcomes:
        report = outcome.report
        same = (
            "yes"
            if outcome.worst_relative_difference <= SAME_NUMBERS_RELATIVE
            else f"NO ({outcome.worst_relative_difference:.1e})"
        )
        engine = (outcome.engine_cold_new_s, outcome.engine_cold_s, outcome.engine_s)
        near_floor = " / ".join(f"{seconds / outcome.floor_s:.3g}×" for seconds in engine)
        faster = " / ".join(f"{outcome.duckdb_s / seconds:.3g}×" for seconds in engine)
        new, seen, warm = (milliseconds(seconds) for seconds in engine)
        lines.append(
            f"{f'{report.name}, {report.days} d {ADVERB[report.granularity]}':<44} {outcome.area_km2:>6g} km²"
            f" {outcome.places:>6,} {outcome.buckets:>7,} {new:>9} {seen:>10} {warm:>9}"
            f" {milliseconds(outcome.floor_s):>9} {milliseconds(outcome.duckdb_s):>9}"
            f" {near_floor:>22} {faster:>30} {outcome.peak_rss_mb:>7.0f} MB  {same}"
        )
    lines.append(
        "  cold, new: a worker's first report of an area the service has not seen (weighed in PostGIS); cold, seen:"
        " of an area it has (its stored cell weights read); od-matrix reads zones, no area: both are the same"
    )
    return lines


def milliseconds(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def verdict_lines(
    outcomes: list[Outcome], *, size: str, seed: int, load_rate: float, storage: dict[str, dict]
) -> list[str]:
    def verdict(met: bool, text: str) -> str:
        return f"  [{'met' if met else 'MISSED'}] {text}"

    lines = ["Targets:"]
    for kind, stored in storage.items():
        per_value = stored["released_bytes"] / max(stored["released_values"], 1)
        lines.append(
            verdict(
                per_value <= MAX_BYTES_PER_VALUE,
                f"{kind}: ≤ {MAX_BYTES_PER_VALUE} bytes per published value, indexes and day rollup included:"
                f" {per_value:.2f}",
            )
        )
    for outcome in outcomes:
        name = outcome.report.name
        for state, engine_s in (
            ("cold, new area", outcome.engine_cold_new_s),
            ("cold, area seen before", outcome.engine_cold_s),
            ("warm", outcome.engine_s),
        ):
            faster = outcome.duckdb_s / engine_s
            near_floor = engine_s / outcome.floor_s
            lines.append(
                verdict(
                    faster >= FASTER_THAN_DUCKDB,
                    f"{name}, {state}: ≥{FASTER_THAN_DUCKDB:g}× faster than DuckDB: {faster:.3g}×",
                )
            )
            lines.append(
                verdict(
                    near_floor <= WITHIN_SQL_FLOOR,
                    f"{name}, {state}: within {WITHIN_SQL_FLOOR:g}× of the SQL floor: {near_floor:.3g}×",
                )
            )
    peak = max(outcome.peak_rss_mb for outcome in outcomes)
    started = max(outcome.started_rss_mb for outcome in outcomes)
    lines.append(
        verdict(
            peak < MAX_WORKER_RSS_MB,
            f"worker peak RSS < {MAX_WORKER_RSS_MB} MB: {peak:.0f} MB ({started:.0f} MB of it before the first report)",
        )
    )
    lines.append(
        verdict(
            load_rate >= MIN_LOAD_ROWS_PER_S,
            f"load ≥ {MIN_LOAD_ROWS_PER_S // 1000}k rows/s from CSV (presence): {load_rate / 1000:,.0f}k rows/s",
        )
    )
    lines += growth_lines(outcomes, size=size, seed=seed, verdict=verdict)
    return lines


def growth_lines(outcomes: list[Outcome], *, size: str, seed: int, verdict) -> list[str]:
    """Time growth of each fixed-size report against the smaller sizes that held it (from their
    saved results). The whole-metro report grows with the size's window: it is not compared."""
    lines = []
    for smaller in SIZE_ORDER[: SIZE_ORDER.index(size)]:
        path = results_path(size=smaller, seed=seed)
        if not path.exists():
            lines.append(
                f"  [—] growth {smaller}→{size}: no saved results of size {smaller} (bench/run --size {smaller})"
            )
            continue
        earlier = json.loads(path.read_text())
        for outcome in outcomes:
            before = earlier["reports"].get(outcome.report.name)
            if before and outcome.report.bounds_km is not None:
                growth = outcome.engine_s / before["engine_s"]
                lines.append(
                    verdict(
                        growth <= MAX_GROWTH,
                        f"{outcome.report.name}: time growth {smaller}→{size} ≤ {MAX_GROWTH:g}×: {growth:.2f}×"
                        f" ({milliseconds(before['engine_s'])} at {smaller}, run {earlier['when']})",
                    )
                )
    if size != "L":
        lines.append("  [—] growth S→L: needs a run at size L")
    return lines


def results_path(*, size: str, seed: int) -> Path:
    return BENCH_DIR / f"results-{size}-seed{seed}.json"


def results_save(outcomes: list[Outcome], *, size: str, seed: int) -> None:
    results = {
        "when": f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "reports": {
            outcome.report.name: {
                "engine_s": outcome.engine_s,
                "engine_cold_s": outcome.engine_cold_s,
                "engine_cold_new_s": outcome.engine_cold_new_s,
                "floor_s": outcome.floor_s,
                "duckdb_s": outcome.duckdb_s,
                "peak_rss_mb": outcome.peak_rss_mb,
            }
            for outcome in outcomes
        },
    }
    results_path(size=size, seed=seed).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
