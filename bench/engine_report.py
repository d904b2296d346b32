"""One report in a process of its own, so that the process's peak RSS is what a worker needs to
compute it. bench/timing.py starts it with the report as JSON and talks to it one line at a
time: "run" times the report (footfall_result, dwell_result, catchment_result, od_matrix_result
or compare_result) as a worker that ran it before does (its area, months, releases and regions
kept in memory, insights/held.py); "cold" times it with the area and months emptied first, as a
worker's first report of an area another worker served (the catalogue of releases and the
regions kept, as a worker that ran any report holds them, checked by the notices its session
listens for, insights/catalogue.py; the area and months the node's workers share,
insights/shared.py, as the runs before left them); "cold-node" as "cold" with the catalogue of
releases emptied too and read again by the process's listener on a release's notice (as a
worker process's listener reads it when a release is committed; the regions kept: a release
does not change them), and the node's shared areas and months of this database emptied, as the
service's first report of the area after a release
(every month read from the node's copy of the recent months, insights/local_months.py, or else
from PostgreSQL; what it read is written to the shared months after the timing, as a worker
writes it once the report is final); "sums" returns the sums of the scans the report runs, to
check them against the SQL floor and DuckDB; at the end of its input it answers with its peak
RSS. Reports read the release of each dataset version under the policy the benchmark names (the
current one).
"""

import datetime as dt
import json
import os
import sys
import time

import django
import psycopg


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
    from django.db import connection

    from insights import shared
    from insights.catalogue import CHANNEL, listen_in_background, read_after
    from insights.catalogue import forget as catalogue_forget
    from insights.compare import compare_result
    from insights.grid import cell_corner, cell_id
    from insights.kinds import DWELL, HOME, PRESENCE
    from insights.models import DatasetVersion, ReleasePolicy
    from insights.products import PRODUCTS
    from insights.reports import (
        Query,
        catchment_result,
        dwell_result,
        footfall_result,
        od_matrix_result,
    )
    from insights.selectors import current_release_policy, region_names_by_id, regions_in_area
    from insights.sums import caches_clear, cell_hour_sums, cell_hour_totals, trip_sums

    product = report.pop("product")
    if report["version"] is None:  # the latest of the product's kind, in the database this process reads
        report["version"] = DatasetVersion.objects.filter(kind=PRODUCTS[product].kind.name).latest("pk").pk
    middle = dt.datetime.fromisoformat(report.pop("middle"))
    query = {
        "geometry": GEOSGeometry(report["geometry_hexewkb"]),
        "start": dt.datetime.fromisoformat(report["start"]),
        "end": dt.datetime.fromisoformat(report["end"]),
        "granularity": report["granularity"],
        "time_zone": report["time_zone"],
        "version": report["version"],
        "policy": ReleasePolicy.objects.get(pk=report["policy"]) if report["policy"] else current_release_policy(),
    }
    halves = [(query["start"], middle), (middle, query["end"])]
    if product == "compare":
        # The first half of the span against the second.
        query = {**query, "end": middle, "comparison_start": middle, "comparison_end": halves[1][1]}
    if product == "od-matrix":
        # The buyer's zones by default: every one the area overlaps.
        zones = {region.id: (region.code, region.name) for region in regions_in_area(geometry=query.pop("geometry"))}
        query["regions"] = zones
    # The selectors take the policy's id, the reports the policy.
    read = {name: value for name, value in query.items() if name != "regions"} | {"policy": query["policy"].pk}

    def sums() -> dict[str, list]:
        """Keys as the benchmark compares them: bucket epoch seconds, cell ids, region codes."""
        if product == "od-matrix":
            flows = trip_sums(**{**read, "zones": list(zones)})
            return {
                "flows": [
                    [f"{bucket.timestamp():.0f} {zones[origin][0]} {zones[destination][0]}", published.value]
                    for (bucket, origin, destination), published in flows.by_bucket.items()
                ]
            }
        if product == "compare":
            series = []
            for start, end in halves:
                half = {**read, "start": start, "end": end}
                names = ("geometry", "start", "end", "granularity", "time_zone", "version", "policy")
                sums = cell_hour_sums(kind=PRESENCE, **{name: half[name] for name in names})
                series += [[bucket.timestamp(), published.value] for (bucket, *_), published in sums.by_bucket.items()]
            return {"series": series, "cells": []}
        kind = {"footfall": PRESENCE, "dwell": DWELL, "catchment": HOME}[product]
        sums = cell_hour_sums(kind=kind, **read, with_cells=True)
        # Without breakdowns every key is (bucket start, all segments...).
        found = {
            "series": [[bucket.timestamp(), published.value] for (bucket, *_), published in sums.by_bucket.items()],
            "cells": [
                [cell_id(*cell_corner(code)), float(value)]
                for (code, _), value in zip(sums.cells, sums.cell_value, strict=True)
            ],
        }
        if product == "dwell":
            by_band = cell_hour_totals(kind=DWELL, **read, breakdowns=("dwell_band",))
            found["bands"] = [
                [f"{bucket.timestamp():.0f} {band}", published.value] for (bucket, band), published in by_band.items()
            ]
        if product == "catchment":
            by_region = {}
            for (_, region), published in cell_hour_totals(
                kind=HOME, **read, breakdowns=("home_region",), over_period=True
            ).items():
                by_region[region] = by_region.get(region, 0.0) + published.value
            codes = region_names_by_id(by_region)
            found["regions"] = [[codes[region][0], value] for region, value in by_region.items()]
        return found

    result = {
        "footfall": footfall_result,
        "dwell": dwell_result,
        "catchment": catchment_result,
        "od-matrix": od_matrix_result,
        "compare": compare_result,
    }[product]

    def release_heard(name: str) -> None:
        """The catalogue emptied, a release's notice sent as its commit sends one, and the
        listener's read of the catalogue after it awaited."""
        catalogue_forget()
        with psycopg.connect(**connection.get_connection_params(), autocommit=True) as other:
            other.execute("SELECT pg_notify(%s, %s)", (CHANNEL, name))
        waited = time.monotonic()
        while not read_after(name):
            if time.monotonic() - waited > 10:
                raise SystemExit("the catalogue's listener did not read the catalogue after a notice")
            time.sleep(0.001)

    listen_in_background()  # as a report worker process does when it starts
    answer({"started_rss_mb": peak_rss_mb()})
    for line in sys.stdin:
        command = line.strip()
        if command in ("run", "cold", "cold-node"):
            if command == "cold-node":
                shared.forget_all()
            if command != "run":
                # A worker that ran reports before holds the catalogue and the regions (its session
                # listens for changes). After a release it reads the catalogue again; the regions
                # it keeps (keyed by their own change mark, which a release does not move).
                caches_clear(releases=False)
                if command == "cold-node":
                    release_heard(f"bench-{os.getpid()}-{time.monotonic_ns()}")
            started = time.perf_counter()
            result(Query(**query))
            answer({"seconds": time.perf_counter() - started})
            shared.flush()  # as a worker does once the report is final
        elif command == "sums":
            answer(sums())
        else:
            raise SystemExit(f"unknown command {command!r}")
    answer({"peak_rss_mb": peak_rss_mb()})


if __name__ == "__main__":
    main()
