"""One report timed: the engine in a process of its own (bench/engine_report.py) cold and warm,
the SQL floor and DuckDB taking turns, and the three's sums compared."""

import dataclasses
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import psycopg
import pyarrow as pa
from django.contrib.gis.geos import MultiPolygon, Polygon

from bench.metro_db import ROOT, conninfo, database_url
from bench.queries import DUCKDB_CONFIG, SHARES, check_sql, duckdb_sql, packed_floor, packed_floor_sql
from bench.shapes import Report
from insights.synthetic.metro import ORIGIN_EAST, ORIGIN_NORTH, Size

TIME_ZONE = "Europe/Berlin"


@dataclasses.dataclass
class Outcome:
    report: Report
    area_km2: float
    places: int  # cells, or zones for od-matrix
    buckets: int
    engine_s: float  # warm: the area's cells and months kept from the run before
    engine_cold_s: float  # the worker's caches emptied first, the node's shared months as the runs before left them
    engine_cold_node_s: float  # the node's shared months emptied too: the service's first report after a release
    floor_s: float
    duckdb_s: float
    started_rss_mb: float
    peak_rss_mb: float
    worst_relative_difference: float


def measure(report: Report, *, size: Size, database: str, store: Path, runs: int) -> Outcome:
    # The engine's modules need Django set up first.
    from insights.buckets import buckets
    from insights.models import DatasetVersion
    from insights.products import PRODUCTS
    from insights.selectors import MIN_SHARE, current_release_policy, regions_in_area
    from insights.sums import presence_source

    print(f"  timing the {report.name} report", file=sys.stderr)
    geometry = report_geometry(report, size)
    zone = ZoneInfo(TIME_ZONE)
    start, _, end = report_period(report, size)
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
    engine = EngineProcess(engine_request(report, size, version=version, policy=policy))
    times = {"engine": [], "engine_cold": [], "engine_cold_node": [], "floor": [], "duckdb": []}
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
            engine_cold_node_s = engine.time_report(cold=True, node=True)
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
                times["engine_cold_node"].append(engine_cold_node_s)
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
        engine_cold_node_s=statistics.median(times["engine_cold_node"]),
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


def report_geometry(report: Report, size: Size) -> MultiPolygon:
    """The report's area as a buyer draws it, in longitude/latitude."""
    west, south, east, north = report.bounds(size)
    box = Polygon.from_bbox(
        (ORIGIN_EAST + west * 1000, ORIGIN_NORTH + south * 1000, ORIGIN_EAST + east * 1000, ORIGIN_NORTH + north * 1000)
    )
    box.srid = 3035
    box.transform(4326)  # customers draw in longitude/latitude
    return MultiPolygon(box, srid=4326)


def report_period(report: Report, size: Size) -> tuple[dt.datetime, dt.datetime, dt.datetime]:
    """The report's start, middle (compare's halves meet there) and end: its last `days` local
    days of the size's span, as a rolling order ("the last 90 days") reads the newest data. An
    hourly compare's are moved back a week at a time until its halves hold as many hours (a
    clock change in one half only would make them differ, which an order may not)."""
    zone = ZoneInfo(TIME_ZONE)

    def midnight(day: dt.date) -> dt.datetime:
        return dt.datetime.combine(day, dt.time(), tzinfo=zone).astimezone(dt.UTC)

    end_day = size.first_day + dt.timedelta(days=size.days)
    while True:
        first_day = end_day - dt.timedelta(days=report.days)
        start, middle, end = (
            midnight(first_day + dt.timedelta(days=days)) for days in (0, report.days // 2, report.days)
        )
        same_hours = middle - start == end - middle
        if report.product != "compare" or report.granularity != "hour" or same_hours or first_day <= size.first_day:
            return start, middle, end
        end_day -= dt.timedelta(weeks=1)


def engine_request(report: Report, size: Size, *, version: int | None, policy: int | None) -> dict:
    """What bench/engine_report.py computes: the report over the size's metro; version and
    policy None: the latest dataset version of the product's kind and the current policy of the
    database the engine process reads."""
    start, middle, end = report_period(report, size)
    return {
        "product": report.product,
        "geometry_hexewkb": report_geometry(report, size).hexewkb.decode(),
        "start": start.isoformat(),
        "end": end.isoformat(),
        "granularity": report.granularity,
        "time_zone": TIME_ZONE,
        "version": version,
        "policy": policy,
        "middle": middle.isoformat(),
    }


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

    def __init__(self, report: dict, *, database: str | None = None):
        """database: another than the benchmark's own (DATABASE_URL)."""
        environment = os.environ | ({"DATABASE_URL": database_url(database)} if database else {})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.engine_report", json.dumps(report)],
            cwd=ROOT,
            env=environment,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.started_rss_mb = self._answer()["started_rss_mb"]

    def time_report(self, *, cold: bool = False, node: bool = False) -> float:
        """One run's seconds; cold: with the worker's caches emptied first; node: and the node's
        shared months of the database (insights/shared.py)."""
        return self._ask(("cold-node" if node else "cold") if cold else "run")["seconds"]

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
