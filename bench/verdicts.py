"""The benchmark's table of outcomes and its targets, met or missed, with the growth from the
smaller sizes."""

from bench.growth import Growth
from bench.shapes import ADVERB
from bench.timing import Outcome

SAME_NUMBERS_RELATIVE = 1e-6

# Targets from the issue.
FASTER_THAN_DUCKDB = 3.0
WITHIN_SQL_FLOOR = 1.2
MAX_GROWTH = 1.3
MAX_WORKER_RSS_MB = 300
MIN_LOAD_ROWS_PER_S = 1_000_000
MAX_BYTES_PER_VALUE = 8


def outcome_lines(outcomes: list[Outcome]) -> list[str]:
    header = (
        f"{'report':<44} {'area':>9} {'places':>6} {'buckets':>7} {'cold, node':>10} {'cold, worker':>12} {'warm':>9}"
        f" {'SQL floor':>9} {'DuckDB':>9} {'floor: node/worker/warm':>25} {'DuckDB/engine: node/worker/warm':>33}"
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
        engine = (outcome.engine_cold_node_s, outcome.engine_cold_s, outcome.engine_s)
        near_floor = " / ".join(f"{seconds / outcome.floor_s:.3g}×" for seconds in engine)
        faster = " / ".join(f"{outcome.duckdb_s / seconds:.3g}×" for seconds in engine)
        node, worker, warm = (milliseconds(seconds) for seconds in engine)
        lines.append(
            f"{f'{report.name}, {report.days} d {ADVERB[report.granularity]}':<44} {outcome.area_km2:>6g} km²"
            f" {outcome.places:>6,} {outcome.buckets:>7,} {node:>10} {worker:>12} {warm:>9}"
            f" {milliseconds(outcome.floor_s):>9} {milliseconds(outcome.duckdb_s):>9}"
            f" {near_floor:>25} {faster:>33} {outcome.peak_rss_mb:>7.0f} MB  {same}"
        )
    lines.append(
        "  cold, node: the service's first report of the area after a release (every worker's memory and the node's"
        " shared months emptied: all read from PostgreSQL, and shared after the timing, as a worker does once the"
        " report is final); cold, worker: a worker's first report of the area (its areas and months emptied, its"
        " releases and regions kept, the areas and months the node's workers share kept)"
    )
    return lines


def milliseconds(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def verdict_lines(
    outcomes: list[Outcome],
    growths: list[Growth],
    missing_sizes: list[str],
    *,
    size: str,
    load_rate: float,
    storage: dict[str, dict],
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
            ("cold, node", outcome.engine_cold_node_s),
            ("cold, worker", outcome.engine_cold_s),
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
    if outcomes:  # --only may time none
        peak = max(outcome.peak_rss_mb for outcome in outcomes)
        started = max(outcome.started_rss_mb for outcome in outcomes)
        lines.append(
            verdict(
                peak < MAX_WORKER_RSS_MB,
                f"worker peak RSS < {MAX_WORKER_RSS_MB} MB: {peak:.0f} MB ({started:.0f} MB of it before the first"
                " report)",
            )
        )
    lines.append(
        verdict(
            load_rate >= MIN_LOAD_ROWS_PER_S,
            f"load ≥ {MIN_LOAD_ROWS_PER_S // 1000}k rows/s from CSV (presence): {load_rate / 1000:,.0f}k rows/s",
        )
    )
    lines += growth_lines(growths, missing_sizes, size=size, verdict=verdict)
    return lines


def growth_lines(growths: list[Growth], missing: list[str], *, size: str, verdict) -> list[str]:
    """Time growth of each fixed-size report from the smaller sizes, both timed in this run
    (bench/growth.py). The whole-metro report grows with the size's window: it is not compared."""
    lines = list(missing)
    for growth in growths:
        for state, (smaller_s, size_s) in growth.seconds.items():
            lines.append(
                verdict(
                    growth.ratio[state] <= MAX_GROWTH,
                    f"{growth.report.name}, {state}: time growth {growth.smaller}→{growth.size} ≤ {MAX_GROWTH:g}×:"
                    f" {growth.ratio[state]:.2f}× (medians {milliseconds(smaller_s)} → {milliseconds(size_s)},"
                    " timed in turns)",
                )
            )
    if size != "L":
        lines.append("  [—] growth S→L: needs a run at size L")
    return lines
