"""The growth of each fixed-size report from a smaller size to this one, measured in one run.

A report of the same area and period (a shopping centre, a district) should cost about the same
whatever else the release holds. Timed in separate runs, the ratio mostly measured how busy the
host was in each (session 20: 0.62–2.31× over three pairs of runs a few minutes apart). So both
sizes' engine processes run side by side here, taking turns report by report (each size first
in half of the runs), each over its own size's database, and the growth is the median of the
runs' ratios: each ratio's two times share the host's state.
A smaller size counts when its database holds that size's metro of the same seed, released
under the policy the settings describe, as its own bench/run left it.
"""

import dataclasses
import statistics
import sys

import psycopg

from bench.metro_db import bench_database, conninfo, database_exists, loaded_files, migrate
from bench.shapes import SIZE_ORDER, Report
from bench.timing import EngineProcess, engine_request
from insights.synthetic.metro import SIZES

# As the benchmark's table names them; each with (cold, node) for EngineProcess.time_report.
STATES = {"cold, node": (True, True), "cold, worker": (True, False), "warm": (False, False)}
# At least so many timed runs per size and state, an even number: a warm shopping centre takes
# under a millisecond, and a median of 3 moved by 0.4 ms from one run of the benchmark to the next.
MIN_RUNS = 16

# Whether every dataset version has a release under the policy the settings describe.
_RELEASED_UNDER_SETTINGS_SQL = """
    SELECT count(DISTINCT r.dataset_version_id) = (SELECT count(*) FROM insights_datasetversion)
    FROM insights_release r JOIN insights_releasepolicy p ON p.id = r.policy_id
    WHERE p.k = %(k)s AND p.round_to = %(round_to)s AND p.noise_scale = %(noise_scale)s AND p.noise_key = %(noise_key)s
"""


@dataclasses.dataclass
class Growth:
    report: Report
    smaller: str
    size: str
    seconds: dict[str, tuple[float, float]]  # per state: the smaller size's median, this size's
    ratio: dict[str, float]  # per state: the median of the runs' ratios, this size's time to the smaller's


def loaded_smaller_sizes(size: str, seed: int) -> tuple[list[str], list[str]]:
    """The sizes below this one whose database holds their metro of this seed, released under
    the settings' policy (migrated here, as this size's is), and a line for each that does not."""
    from django.conf import settings

    from insights.releases import noise_key
    from insights.services import file_sha256

    policy = {
        "k": settings.PRIVACY_K,
        "round_to": settings.PRIVACY_ROUND_TO,
        "noise_scale": settings.PRIVACY_NOISE_SCALE,
        "noise_key": noise_key(),
    }
    found, missing = [], []
    for smaller in SIZE_ORDER[: SIZE_ORDER.index(size)]:
        database = bench_database(smaller)
        files = loaded_files(size=smaller, seed=seed)
        if not all(path.exists() for path in files) or not database_exists(database):
            missing.append(
                f"  [—] growth {smaller}→{size}: no database or files of size {smaller} (bench/run --size {smaller})"
            )
            continue
        migrate(database)
        with psycopg.connect(conninfo(database)) as connection:
            loaded = {sha for (sha,) in connection.execute("SELECT sha256 FROM insights_datasetversion")}
            (released,) = connection.execute(_RELEASED_UNDER_SETTINGS_SQL, policy).fetchone()
        if loaded != {file_sha256(path) for path in files}:
            missing.append(
                f"  [—] growth {smaller}→{size}: {database} holds another metro (bench/run --size {smaller})"
            )
        elif not released:
            missing.append(
                f"  [—] growth {smaller}→{size}: {database} is not released under the settings' policy"
                f" (bench/run --size {smaller})"
            )
        else:
            found.append(smaller)
    return found, missing


def measure_growth(report: Report, *, smaller: str, size: str, runs: int) -> Growth:
    """The report's engine times at both sizes, cold for the node, cold for a worker and warm,
    taking turns, over MIN_RUNS timed runs at least, after one warm-up."""
    runs = max(runs + runs % 2, MIN_RUNS)
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
            for state, (cold, node) in STATES.items():
                seconds = engines[name].time_report(cold=cold, node=node)
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
        ratio={
            state: statistics.median(
                larger / smaller_s for smaller_s, larger in zip(times[smaller, state], times[size, state], strict=True)
            )
            for state in STATES
        },
    )
