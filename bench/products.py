"""The report benchmark (bench/run --size S|M|L): builds the synthetic metro at a size and
times the footfall, dwell, catchment, od-matrix and compare reports of three shapes (a
shopping centre, a district, the whole metro) in the engine, against the bare SQL floor and
DuckDB. A shopping centre's report covers the last 90 days of the size's span (compare: 70,
moved back a week at a time until its halves hold as many hours), as a rolling order reads the
newest data; a district's and the whole metro's the whole span.

Reports read published values only: the release of each dataset version under the current
release policy (insights.releases). The loaders build a version's release in the load's own
transaction; the benchmark prints the load and the release build apart (the release's
duration_seconds, values released and withheld).

For each report it prints the engine's time (footfall_result, dwell_result and the others as a
worker runs them, with the current ReleasePolicy, in a process of its own, the median of the
timed runs) three ways: cold for the node (the worker's caches of areas, decoded months and
releases emptied (its regions kept: a release does not change them), and the areas and months
the node's workers share in Redis, insights/shared.py: the service's first report of the area
after a release, every month read from the node's copy of the recent months,
insights/local_months.py, which the benchmark writes after its load as a release's warm-up does,
or else from PostgreSQL; what it read is shared after the timing, as a worker shares it once the
report is final), cold for a worker (its areas and months emptied, its releases and regions kept
as a worker that ran any report holds them, the shared areas and months as the runs before left
them: a worker's first report of an area another worker served, as a buyer's monthly order of
the same shopping centre is) and warm (a repeated area: its months in memory), the floor over
the packed layout (one statement fetching, in binary, the packed rows of the area's cells and
months the report needs from insights_<kind>_released or its _day rollup, and decoding and
summing their values with numpy: the least any report over this layout does), DuckDB over the
same released hourly values (exported from PostgreSQL to Parquet once per release, cell shares
computed once in PostGIS, buckets in Europe/Berlin with DuckDB's built-in ICU), the engine
process's peak RSS, and whether all three return the same numbers: the sums per bucket and per
cell, per bucket and dwell band, per home region, per bucket and zone pair (the SQL side of that
check is one statement over the views that unpack the packed rows, untimed). It also reports the
load rates, the bytes stored per published value and checks the targets.

It uses a database of its own per size (footfall_bench_s, _m, _l), which holds one seed at a
time, and keeps its files in var/bench/.
"""

import argparse
import datetime as dt
import os
import platform
import sys
import time

import django
import duckdb

from bench.growth import loaded_smaller_sizes, measure_growth
from bench.metro_db import (
    BENCH_DIR,
    bench_database,
    database_prepare,
    database_url,
    duckdb_store,
    generate,
    load,
    loaded_files,
    psql_as_postgres,
    storage_lines,
    stored_bytes,
)
from bench.shapes import REPORTS, SIZE_ORDER
from bench.timing import measure
from bench.verdicts import SAME_NUMBERS_RELATIVE, outcome_lines, verdict_lines
from insights.synthetic.metro import (
    SIZES,
    metro_file_name,
    metro_places_names,
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
        help="time only the reports whose name holds TEXT, e.g. 'catchment: shopping' (repeatable)",
    )
    args = parser.parse_args()
    database = bench_database(args.size)
    # Everything this runs, the processes it starts too, uses the bench database, never the development one.
    os.environ["DATABASE_URL"] = database_url(database)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "marketplace.settings")
    # No buyer ever ordered from it: its loads queue no warm-up (marketplace/services/warmup.py).
    os.environ["REPORT_WARMUP_AREAS"] = "0"
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    size = SIZES[args.size]
    parquet = BENCH_DIR / metro_file_name(size=size.name, seed=args.seed)
    # The presence is loaded from CSV, as operators deliver it; the other kinds from Parquet.
    presence_csv = BENCH_DIR / metro_file_name(size=size.name, seed=args.seed, suffix=".csv")
    places = {name: BENCH_DIR / file for name, file in metro_places_names(size=size.name, seed=args.seed).items()}

    lines = [f"Report benchmark, size {size.name}, seed {args.seed}, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"]
    lines += machine_lines(args.runs) + sizes_lines()
    lines.append(generate([parquet, presence_csv, *places.values()], size=size.name, seed=args.seed))
    loaded = loaded_files(size=size.name, seed=args.seed)
    django.setup()
    from insights.services import file_sha256  # the app registry first

    database_prepare(database, {file_sha256(path) for path in loaded})
    load_lines, load_rate = load(database, presence_csv, places)
    lines += load_lines
    storage = stored_bytes(database)
    lines += storage_lines(storage)
    store, duckdb_lines = duckdb_store(database, size=size.name, seed=args.seed)
    lines += duckdb_lines + local_months_lines()
    outcomes = [
        measure(report, size=size, database=database, store=store, runs=args.runs)
        for report in REPORTS
        if report.fits(size) and (not args.only or any(text in report.name for text in args.only))
    ]
    # The table first: the growth's timing starts other processes, over other databases.
    print("\n".join([*lines, "", *outcome_lines(outcomes)]), flush=True)
    smaller_sizes, missing_sizes = loaded_smaller_sizes(size.name, args.seed)
    growths = [
        measure_growth(outcome.report, smaller=smaller, size=size.name, runs=args.runs)
        for smaller in smaller_sizes
        for outcome in outcomes
        if outcome.report.bounds_km is not None and outcome.report.fits(SIZES[smaller])
    ]
    targets = verdict_lines(outcomes, growths, missing_sizes, size=size.name, load_rate=load_rate, storage=storage)
    print("\n".join(["", *targets]))
    if any(outcome.worst_relative_difference > SAME_NUMBERS_RELATIVE for outcome in outcomes):
        sys.exit("the engine, the SQL floor and DuckDB disagree: see 'same numbers' above")


def local_months_lines() -> list[str]:
    """Write the node's copy of the recent months, as the release's warm-up task does
    (insights/local_months.py); what it wrote and what it holds."""
    from django.conf import settings

    from insights import local_months

    started = time.perf_counter()
    written = local_months.write()
    seconds = time.perf_counter() - started
    held = sum(path.stat().st_size for path in local_months.database_dir().rglob("*.npy"))
    again = "" if written else " (all there from an earlier run)"
    return [
        f"The node's copy of the recent months ({settings.LOCAL_MONTHS} months of hours and"
        f" {settings.LOCAL_DAY_MONTHS} of days a kind, {held / 1e9:.2f} GB on disk):"
        f" {len(written)} month-tables written in {seconds:.1f} s{again}"
    ]


def machine_lines(runs: int) -> list[str]:
    postgres = psql_as_postgres("SHOW server_version")
    return [
        f"  machine: {os.cpu_count()} cores, {platform.machine()}, PostgreSQL {postgres}, DuckDB {duckdb.__version__}"
        " (ICU time zones built in, nothing downloaded)",
        f"  load average at the start: {os.getloadavg()[0]:.1f} (other processes' share of the {os.cpu_count()} cores"
        " shows in the figures)",
        f"  times: median of {runs} runs after a warm-up, engine (cold for the node, cold for a worker, then"
        " warm), floor and DuckDB taking turns; cold: the worker's areas and decoded months emptied first, and for"
        " the node its releases and regions and the node's shared areas and months too (insights/shared.py);"
        " warm: the same area again",
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


if __name__ == "__main__":
    main()
