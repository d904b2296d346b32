"""The growth of each fixed-size report from a smaller size to this one, measured in one run.

A report of the same area and period (a shopping centre, a district) should cost about the same
whatever else the release holds. Timed in separate runs, the ratio mostly measured how busy the
host was in each (session 20: 0.62–2.31× over three pairs of runs a few minutes apart). So both
sizes' engine processes run side by side here, taking turns report by report (the order swapped
every run), each over its own size's database: the two medians share the host's state.
A smaller size counts when its database holds that size's metro of the same seed, as its own
bench/run left it.
"""

import dataclasses
import statistics
import sys

import psycopg

from bench.metro_db import BENCH_DIR, LOADED_PLACES, bench_database, conninfo, psql_as_postgres
from bench.shapes import SIZE_ORDER, Report
from bench.timing import EngineProcess, engine_request
from insights.synthetic.metro import SIZES, metro_file_name, metro_places_names

STATES = ("cold, node", "cold, worker", "warm")
# At least so many timed runs per size and state: a warm shopping centre takes under a
# millisecond, and a median of 3 moved by 0.4 ms from one run of the benchmark to the next.
MIN_RUNS = 15


@dataclasses.dataclass
class Growth:
    report: Report
    smaller: str
    size: str
    seconds: dict[str, tuple[float, float]]  # per state: the smaller size's median, this size's


def loaded_smaller_sizes(size: str, seed: int) -> tuple[list[str], list[str]]:
    """The sizes below this one whose database holds their metro of this seed, and a line for
    each that does not."""
    from insights.services import file_sha256

    found, missing = [], []
    for smaller in SIZE_ORDER[: SIZE_ORDER.index(size)]:
        database = bench_database(smaller)
        files = [BENCH_DIR / metro_file_name(size=smaller, seed=seed, suffix=".csv")]
        files += [BENCH_DIR / metro_places_names(size=smaller, seed=seed)[name] for name in LOADED_PLACES]
        loaded = set()
        if all(path.exists() for path in files) and psql_as_postgres(
            f"SELECT 1 FROM pg_database WHERE datname = '{database}'"
        ):
            with psycopg.connect(conninfo(database)) as connection:
                loaded = {sha for (sha,) in connection.execute("SELECT sha256 FROM insights_datasetversion")}
        if loaded and loaded == {file_sha256(path) for path in files}:
            found.append(smaller)
        else:
            missing.append(
                f"  [—] growth {smaller}→{size}: no loaded database of size {smaller} (bench/run --size {smaller})"
            )
    return found, missing


def measure_growth(report: Report, *, smaller: str, size: str, runs: int) -> Growth:
    """The report's engine times at both sizes, cold for the node, cold for a worker and warm,
    taking turns: the median of each over the timed runs (MIN_RUNS at least), after one warm-up."""
    runs = max(runs, MIN_RUNS)
    print(f"  timing the growth of the {report.name} report, {smaller}→{size}", file=sys.stderr)
    engines = {
        name: EngineProcess(
            engine_request(report, SIZES[name], version=None, policy=None), database=bench_database(name)
        )
        for name in (smaller, size)
    }
    times = {(name, state): [] for name in engines for state in STATES}
    for run in range(runs + 1):
        for name in (smaller, size) if run % 2 else (size, smaller):
            engine = engines[name]
            for state, (cold, node) in zip(STATES, ((True, True), (True, False), (False, False)), strict=True):
                seconds = engine.time_report(cold=cold, node=node)
                if run:
                    times[name, state].append(seconds)
    for engine in engines.values():
        engine.finish()
    return Growth(
        report=report,
        smaller=smaller,
        size=size,
        seconds={
            state: (statistics.median(times[smaller, state]), statistics.median(times[size, state])) for state in STATES
        },
    )
