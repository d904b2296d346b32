"""Reads of the data side: coverage, cells under an area, and aggregate sums."""

import contextlib
import datetime as dt
import itertools
import math
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from functools import partial
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.gis.db.models.functions import Transform
from django.contrib.gis.geos import GEOSGeometry
from django.db import connection
from django.db.models import Count, Max

from insights.buckets import buckets, local_midnight
from insights.kinds import PRESENCE, TRIPS, AggregateKind
from insights.models import DatasetVersion, Region, ReleasePolicy, RetentionMark
from insights.releases import noise_key

# The cells an area covers, each weighted by the share of the cell inside the area.
# Areas arrive in EPSG:4326 and are evaluated in EPSG:3035, an equal-area projection.
# A share under MIN_SHARE (a 2.5 cm strip along a 250 m cell's edge) is reprojection
# noise of an edge drawn along the grid (4326 <-> 3035 round trips drift ~0.3 mm),
# not a covered cell.
MIN_SHARE = 1e-4
# A cell wholly inside the area is all in it: only the cells on its edge are intersected.
_CELL_SHARES = """
    area AS (SELECT ST_Transform(ST_GeomFromEWKB(%(geometry)s), 3035) AS g),
    shares AS (
        SELECT c.id AS cell_id, c.code, inside.m2 AS inside_m2, inside.m2 / ST_Area(c.geometry) AS share
        FROM insights_cell c JOIN area ON ST_Intersects(c.geometry, area.g)
        CROSS JOIN LATERAL (
            SELECT CASE WHEN ST_Within(c.geometry, area.g) THEN ST_Area(c.geometry)
                        ELSE ST_Area(ST_Intersection(c.geometry, area.g)) END AS m2
        ) inside
    ),
    covered AS (SELECT * FROM shares WHERE share >= %(min_share)s)
"""


@dataclass(frozen=True)
class Coverage:
    start: dt.datetime
    end: dt.datetime
    latest_version: int
    policy: ReleasePolicy  # the policy whose releases reports read
    gaps: tuple[tuple[dt.datetime, dt.datetime], ...] = ()  # spans between loads that no load covers

    def first_gap_in(self, start: dt.datetime, end: dt.datetime) -> tuple[dt.datetime, dt.datetime] | None:
        return next(
            ((gap_start, gap_end) for gap_start, gap_end in self.gaps if gap_start < end and start < gap_end), None
        )


@dataclass(frozen=True)
class AreaCells:
    area_km2: float
    covered_km2: float  # inside the coverage (insights.models.Coverage)
    cell_count: int  # cells with a published value


def current_release_policy() -> ReleasePolicy | None:
    """The policy reports read: the one the settings describe once every loaded dataset version
    has a release under it; until then (settings changed, build_releases not yet run), the
    newest policy that has. So a report never reads some versions under one policy and misses
    the others. None before the first load."""
    versions = DatasetVersion.objects.count()
    if not versions:
        return None
    complete = ReleasePolicy.objects.annotate(released=Count("releases")).filter(released=versions)
    described = complete.filter(
        k=settings.PRIVACY_K,
        round_to=settings.PRIVACY_ROUND_TO,
        noise_scale=settings.PRIVACY_NOISE_SCALE,
        noise_key=noise_key(),
    ).first()
    return described or complete.order_by("-pk").first()


def coverage(*, kind: AggregateKind) -> Coverage | None:
    """The period the released data of a kind spans under the current policy, with its gaps,
    or None before the first release: a version without a release is not sold."""
    policy = current_release_policy()
    if policy is None:
        return None
    versions = DatasetVersion.objects.filter(kind=kind.name, releases__policy=policy)
    periods = sorted(versions.values_list("period_start", "period_end"))
    if not periods:
        return None
    gaps, covered_until = [], periods[0][1]
    for period_start, period_end in periods[1:]:
        if period_start > covered_until:
            gaps.append((covered_until, period_start))
        covered_until = max(covered_until, period_end)
    mark = RetentionMark.objects.filter(kind=kind.name).first()
    start = max(periods[0][0], mark.retained_from) if mark else periods[0][0]
    return Coverage(
        start=start,
        end=covered_until,
        latest_version=versions.aggregate(latest=Max("id"))["latest"],
        policy=policy,
        gaps=tuple(gaps),
    )


def dataset_sources(
    *, kind: AggregateKind, start: dt.datetime, end: dt.datetime, version: int, policy: ReleasePolicy
) -> list[dict]:
    """The dataset versions a report over [start, end) reads (released under the policy), with
    what the operator's pipeline said of each (its manifest)."""
    versions = DatasetVersion.objects.filter(
        kind=kind.name, releases__policy=policy, pk__lte=version, period_start__lt=end, period_end__gt=start
    )
    return [
        {
            "dataset_version": version.pk,
            "period_start": version.period_start.isoformat(),
            "period_end": version.period_end.isoformat(),
            "manifest": version.manifest,
        }
        for version in versions.order_by("pk")
    ]


def area_cells(*, geometry: GEOSGeometry) -> AreaCells:
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH {_CELL_SHARES}"
            " SELECT (SELECT ST_Area(g) FROM area) / 1e6,"
            "        coalesce((SELECT ST_Area(ST_Intersection(area.g, coverage.geometry))"
            "                  FROM area, insights_coverage coverage), 0) / 1e6,"
            "        (SELECT count(*) FROM covered)",
            {"geometry": bytes(geometry.ewkb), "min_share": MIN_SHARE},
        )
        area_km2, covered_km2, cell_count = cursor.fetchone()
    return AreaCells(area_km2=area_km2, covered_km2=covered_km2, cell_count=cell_count)


# Where a report's numbers come from: the coarsest table of published values that answers it
# exactly. Rollups are kept per local day and week of ROLLUP_TIME_ZONE only.
# Per source: the table's suffix, the period filter, the bucket for hour and coarser, and how
# many hourly values a row sums.
_SOURCES = {
    "hour": (
        "",
        "t.hour >= %(start)s AND t.hour < %(end)s",
        {"hour": "t.hour", "day": "date_trunc(%(granularity)s, t.hour, %(time_zone)s)"},
        "1",
    ),
    # Rollups give local dates; they become instants in Python, once per bucket, not per row.
    "day": (
        "_day",
        "t.day >= %(start_day)s AND t.day < %(end_day)s",
        {"day": "date_trunc(%(granularity)s, t.day)::date"},
        "t.hours",
    ),
    "week": (
        "_week",
        "t.week >= %(start_day)s AND t.week < %(end_day)s",
        {"day": "t.week"},
        "t.hours",
    ),
}
# Reports read published values only: the release of each dataset version up to the report's,
# under one policy.
_RELEASED = "t.policy_id = %(policy)s AND t.dataset_version_id <= %(version)s"
PROGRESS_STEPS = 20
CELL_HOURS_PER_STEP = 2_000_000


def _bucket_reading(
    source: str, granularity: str, bucket_starts: list[dt.datetime], zone: ZoneInfo
) -> tuple[str, Callable[[object], dt.datetime]]:
    """The SQL of a row's bucket, and how the value it returns becomes the bucket's start.
    Hours come back as epoch seconds (parsing thousands of timestamps costs more than the
    sums); days and weeks as local dates, each one's midnight computed once. A day read from
    the day sums is its own bucket, with nothing to truncate."""
    buckets_by_kind = _SOURCES[source][2]
    if source == "day" and granularity == "day":
        bucket = "t.day"
    else:
        bucket = buckets_by_kind["hour" if granularity == "hour" else "day"]
    if source == "hour":
        by_epoch = {int(bucket_start.timestamp()): bucket_start for bucket_start in bucket_starts}
        return f"date_part('epoch', {bucket})::bigint", by_epoch.__getitem__
    midnights: dict[dt.date, dt.datetime] = {}

    def start_of(day: dt.date) -> dt.datetime:
        if day not in midnights:
            midnights[day] = local_midnight(day, zone)
        return midnights[day]

    return bucket, start_of


def presence_source(*, granularity: str, time_zone: str) -> str:
    """'hour', 'day' or 'week': the table a report of this granularity and zone reads."""
    if time_zone != settings.ROLLUP_TIME_ZONE or granularity == "hour":
        return "hour"
    return "week" if granularity == "week" else "day"


@dataclass(frozen=True)
class Released:
    """Published values summed: weighted by the share of each cell inside the area, and how
    many hourly values were published (count), weighted too (weight)."""

    value: float = 0.0
    weight: float = 0.0
    count: int = 0

    def __add__(self, other: "Released") -> "Released":
        return Released(self.value + other.value, self.weight + other.weight, self.count + other.count)


@dataclass(frozen=True)
class Sums:
    by_bucket: dict[tuple, Released]  # (bucket start, *segment codes): what was published
    # with_cells: (cell code, share inside the area, everyone's published values over the period), by code
    by_cell: list[tuple[str, float, Released]]
    # (cell code, share inside the area) of every cell the area covers, by code
    cells: list[tuple[str, float]]


def cell_hour_sums(
    *,
    kind: AggregateKind,
    geometry: GEOSGeometry,
    start: dt.datetime,
    end: dt.datetime,
    granularity: str,
    time_zone: str,
    version: int,
    policy: int,
    breakdowns: Collection[str] = (),
    with_everyone: bool = False,
    with_cells: bool = False,
    over_period: bool = False,
    source: str | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> Sums:
    """Area-weighted sums of the kind's published values (the release of each dataset version
    up to `version` under policy `policy`) per local time bucket and segment (a segment
    column not broken down is 0, all) and, with_cells, everyone's per cell over the whole
    period. with_everyone: everyone's sums per bucket too (segment codes all 0), from the same
    scan as the breakdowns'. over_period: one bucket, the whole period, keyed by its start.

    The area's cells are weighed once; the period is then summed in up to PROGRESS_STEPS
    chunks of whole buckets, reporting the fraction done after each. Buckets and cells come
    from the same scan (grouping sets).
    """
    # A segment broken down reads its specific rows (code > 0), the other its total (0): a
    # constant, so it is not grouped by (hashing it cost a fifth of a whole metro's scan).
    grouped = [name for name in kind.segments if name in breakdowns]
    columns = "".join(f", t.{name}" for name in grouped)
    full_codes = _full_codes(kind, grouped)
    everyone = " AND ".join(f"t.{name} = 0" for name in kind.segments)
    segments = " AND ".join(f"t.{name} {'>' if name in breakdowns else '='} 0" for name in kind.segments)
    # A cell's sum is everyone's: beside the breakdowns, it leaves the segments' rows out. An
    # aggregate written twice is computed once.
    source = source or presence_source(granularity=granularity, time_zone=time_zone)
    suffix, period, _, hours = _SOURCES[source]
    published = [f"sum(t.{kind.value} * c.share)", f"sum({hours} * c.share)", f"sum({hours})"]
    cell_published = published
    if breakdowns and with_everyone:
        segments = f"(({everyone}) OR ({segments}))"
        cell_published = [f"{aggregate} FILTER (WHERE {everyone})" for aggregate in published]
    grouping = f"GROUPING SETS ((bucket{columns}), (t.cell_id))" if with_cells else f"bucket{columns}"
    table = f"{kind.table}_released{suffix} t"
    zone = ZoneInfo(time_zone)
    bucket_starts = [bucket_start for bucket_start, _ in buckets(start, end, granularity, zone)]
    bucket, start_of = _bucket_reading(source, granularity, bucket_starts, zone)
    if over_period:
        bucket, start_of = "0", lambda _: start
    by_bucket: dict[tuple, Released] = {}
    by_cell: dict[int, Released] = {}
    with report_area(geometry) as area:
        cursor = area.cursor
        chunks = _chunks(bucket_starts, end, places=len(area.cells), source=source)
        for done, (chunk_start, chunk_end) in enumerate(chunks, start=1):
            cursor.execute(
                f"SELECT {bucket} AS bucket{columns}, {'t.cell_id' if with_cells else 'NULL'},"
                f" {', '.join(published)}, {', '.join(cell_published)}"
                f" FROM {table} JOIN report_cells c USING (cell_id)"
                f" WHERE {period} AND {segments} AND {_RELEASED}"
                f" GROUP BY {grouping}",
                {
                    "start": chunk_start,
                    "end": chunk_end,
                    "start_day": chunk_start.astimezone(zone).date(),
                    "end_day": chunk_end.astimezone(zone).date(),
                    "granularity": granularity,
                    "time_zone": time_zone,
                    "version": version,
                    "policy": policy,
                },
            )
            nothing = Released()
            for bucket_start, *codes, cell, value, weight, count, cell_value, cell_weight, cell_count in cursor:
                if cell is None:
                    # Chunks hold whole buckets; over the period, each adds its part.
                    key = (start_of(bucket_start), *full_codes(codes))
                    by_bucket[key] = by_bucket.get(key, nothing) + Released(value, weight, count)
                elif cell_count:
                    by_cell[cell] = by_cell.get(cell, nothing) + Released(cell_value, cell_weight, cell_count)
            if on_progress:
                on_progress(done / len(chunks))
    return Sums(
        by_bucket=by_bucket,
        by_cell=[(code, share, by_cell.get(cell, Released())) for cell, code, share in area.cells]
        if with_cells
        else [],
        cells=[(code, share) for _, code, share in area.cells],
    )


def _full_codes(kind: AggregateKind, grouped: list[str]) -> Callable[[list], tuple]:
    """A row's codes of the grouped segments as the codes of all the kind's segments, in order:
    a segment not grouped is read as its total, 0."""
    if len(grouped) == len(kind.segments):
        return tuple
    positions = [grouped.index(name) + 1 if name in grouped else 0 for name in kind.segments]
    return lambda codes: tuple((0, *codes)[position] for position in positions)


def _chunks(
    bucket_starts: list[dt.datetime], end: dt.datetime, *, places: int, source: str
) -> list[tuple[dt.datetime, dt.datetime]]:
    """The period in runs of whole buckets, one statement and one progress step each.

    Steps cost a statement each: only hourly reads of many place-hours are worth watching.
    """
    place_hours = places * (end - bucket_starts[0]) / dt.timedelta(hours=1)
    steps = min(PROGRESS_STEPS, math.ceil(place_hours / CELL_HOURS_PER_STEP)) if source == "hour" else 1
    step = math.ceil(len(bucket_starts) / max(steps, 1))
    return list(itertools.pairwise(bucket_starts[::step] + [end]))


def trip_sums(
    *,
    zones: Collection[int],
    start: dt.datetime,
    end: dt.datetime,
    granularity: str,
    time_zone: str,
    version: int,
    policy: int,
    on_progress: Callable[[float], None] | None = None,
) -> dict[tuple[dt.datetime, int, int], Released]:
    """Published trips between the zones (region ids) per local time bucket: (bucket start,
    origin, destination): trips and how many zone-pair-hours were published, in that order.

    Only pairs with published trips in a bucket appear."""
    source = presence_source(granularity=granularity, time_zone=time_zone)
    suffix, period, _, hours = _SOURCES[source]
    zone = ZoneInfo(time_zone)
    bucket_starts = [bucket_start for bucket_start, _ in buckets(start, end, granularity, zone)]
    bucket, start_of = _bucket_reading(source, granularity, bucket_starts, zone)
    chunks = _chunks(bucket_starts, end, places=len(zones) ** 2, source=source)
    sums = {}
    with connection.cursor() as cursor:
        for done, (chunk_start, chunk_end) in enumerate(chunks, start=1):
            cursor.execute(
                f"SELECT {bucket} AS bucket, t.origin_id, t.destination, sum(t.trips), sum({hours})"
                f" FROM {TRIPS.table}_released{suffix} t"
                f" WHERE t.origin_id = ANY(%(zones)s) AND t.destination = ANY(%(zones)s)"
                f" AND {period} AND {_RELEASED}"
                f" GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
                {
                    "zones": list(zones),
                    "start": chunk_start,
                    "end": chunk_end,
                    "start_day": chunk_start.astimezone(zone).date(),
                    "end_day": chunk_end.astimezone(zone).date(),
                    "granularity": granularity,
                    "time_zone": time_zone,
                    "version": version,
                    "policy": policy,
                },
            )
            for bucket_start, origin, destination, trips, count in cursor.fetchall():
                sums[(start_of(bucket_start), origin, destination)] = Released(int(trips), count, count)
            if on_progress:
                on_progress(done / len(chunks))
    return sums


def regions_by_code(codes: Collection[str]) -> dict[str, Region]:
    return {region.code: region for region in Region.objects.filter(code__in=codes).defer("geometry")}


def region_names(codes: Collection[str]) -> dict[int, tuple[str, str]]:
    """{region id: (code, name)} of the loaded regions among the codes, in the codes' order."""
    by_code = regions_by_code(codes)
    return {by_code[code].id: (code, by_code[code].name) for code in codes if code in by_code}


def region_shapes(codes: Collection[str]) -> dict[str, GEOSGeometry]:
    """{code: boundary in EPSG:4326}, for maps."""
    regions = Region.objects.filter(code__in=codes).annotate(lonlat=Transform("geometry", 4326))
    return {region.code: region.lonlat for region in regions}


def region_names_by_id(ids: Collection[int]) -> dict[int, tuple[str, str]]:
    return {region.id: (region.code, region.name) for region in Region.objects.filter(id__in=ids).defer("geometry")}


# A region overlaps an area when the overlap is at least this share of the smaller of the
# two: a boundary drawn along a region's edge does not pull in its neighbour.
MIN_REGION_OVERLAP = 0.01


def regions_in_area(*, geometry: GEOSGeometry) -> list[Region]:
    """The regions the area overlaps, by code."""
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH area AS (SELECT ST_Transform(ST_GeomFromEWKB(%(geometry)s), 3035) AS g)"
            " SELECT r.id FROM insights_region r JOIN area ON ST_Intersects(r.geometry, area.g)"
            " WHERE ST_Area(ST_Intersection(r.geometry, area.g))"
            "       >= %(overlap)s * least(ST_Area(r.geometry), ST_Area(area.g))",
            {"geometry": bytes(geometry.ewkb), "overlap": MIN_REGION_OVERLAP},
        )
        ids = [region_id for (region_id,) in cursor.fetchall()]
    return list(Region.objects.filter(id__in=ids).defer("geometry").order_by("code"))


def cell_hour_totals(**query) -> dict[tuple, Released]:
    """The per-bucket sums of cell_hour_sums, keyed by (bucket start, *segment codes)."""
    return cell_hour_sums(**query).by_bucket


@dataclass(frozen=True)
class ReportArea:
    cursor: object
    cells: list[tuple[int, str, float]]  # (cell id, code, share inside the area), by code


@contextlib.contextmanager
def report_area(geometry: GEOSGeometry) -> Iterator[ReportArea]:
    """The area's cells (id, code, share) in a session temp table (report_cells) and as a list,
    made once for all the passes of a report: a pass inside another's `with` reuses them.
    Dropped at the end."""
    key = bytes(geometry.ewkb)
    with connection.cursor() as cursor:
        made = getattr(connection, "report_area", None)
        if made and made[0] == key:
            yield ReportArea(cursor=cursor, cells=made[1])
            return
        cursor.execute("DROP TABLE IF EXISTS report_cells")
        cursor.execute(
            f"CREATE TEMP TABLE report_cells AS WITH {_CELL_SHARES} SELECT cell_id, code, share FROM covered",
            {"geometry": key, "min_share": MIN_SHARE},
        )
        cursor.execute("SELECT cell_id, code, share FROM report_cells ORDER BY code")
        cells = cursor.fetchall()
        # Autovacuum never analyzes temp tables; without row counts the planner would scan
        # whole partitions instead of looking the few cells up by key.
        cursor.execute("ANALYZE report_cells (cell_id)")
        # A merge join walks a partition's key from its first cell to the area's last; the
        # planner picks it for a few cells of a small table, where looking each cell up by
        # key costs a fraction. A large area still gets a hash join.
        cursor.execute("SET enable_mergejoin = off")
        connection.report_area = (key, cells)
        try:
            yield ReportArea(cursor=cursor, cells=cells)
        finally:
            connection.report_area = None
            cursor.execute("RESET enable_mergejoin")
            cursor.execute("DROP TABLE IF EXISTS report_cells")


presence_coverage = partial(coverage, kind=PRESENCE)
presence_totals = partial(cell_hour_totals, kind=PRESENCE)
