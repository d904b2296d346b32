"""One footfall report in a process of its own, so that the process's peak RSS is what a
worker needs to compute it. bench/footfall.py starts it with the report as JSON and talks
to it one line at a time: "run" times the report (footfall_result), "sums" returns the
engine's sums per bucket and per cell (cell_hour_sums, the scan footfall_result runs); at the end of
its input it answers with its peak RSS.
"""

import datetime as dt
import json
import sys
import time

import django


def peak_rss_mb() -> float:
    """This process's peak RSS. Not getrusage's ru_maxrss: after fork and exec it starts from
    the parent's RSS, so it would count the benchmark's own memory."""
    with open("/proc/self/status") as status:
        high_water_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    return high_water_kib / 1024


def answer(message: dict) -> None:
    print(json.dumps(message), flush=True)


def main() -> None:
    report = json.loads(sys.argv[1])
    django.setup()
    # Imported after setup: the engine needs the app registry.
    from django.contrib.gis.geos import GEOSGeometry

    from insights.grid import cell_corner, cell_id
    from insights.kinds import PRESENCE
    from insights.reports import footfall_result
    from insights.selectors import cell_hour_sums

    query = {
        "geometry": GEOSGeometry(report["geometry_hexewkb"]),
        "start": dt.datetime.fromisoformat(report["start"]),
        "end": dt.datetime.fromisoformat(report["end"]),
        "granularity": report["granularity"],
        "time_zone": report["time_zone"],
        "version": report["version"],
    }
    answer({"started_rss_mb": peak_rss_mb()})
    for line in sys.stdin:
        command = line.strip()
        if command == "run":
            started = time.perf_counter()
            footfall_result(**query)
            answer({"seconds": time.perf_counter() - started})
        elif command == "sums":
            sums = cell_hour_sums(kind=PRESENCE, **query, with_cells=True)
            # Without breakdowns every key is (bucket start, all ages, all genders).
            series = [[bucket.timestamp(), visits] for (bucket, _, _), visits in sums.by_bucket.items()]
            cells = [[cell_id(*cell_corner(code)), visits] for code, _, visits in sums.by_cell]
            answer({"series": series, "cells": cells})
        else:
            raise SystemExit(f"unknown command {command!r}")
    answer({"peak_rss_mb": peak_rss_mb()})


if __name__ == "__main__":
    main()
