"""Reads of the data side: coverage, cells under an area, and aggregate sums."""

import datetime as dt
import functools
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import psycopg
from django.conf import settings
from django.contrib.gis.db.models.functions import Transform
from django.contrib.gis.geos import GEOSGeometry
from django.db import connection
from django.db.models import Count, Max

from insights.catalogue import catalogue
from insights.grid import ROW
from insights.kinds import PRESENCE, AggregateKind
from insights.models import DatasetVersion, Region, ReleasePolicy, RetentionMark
from insights.regions import regions
from insights.releases import noise_key

# The cells an area covers, each weighted by the share of the cell inside the area: the web's
# order checks (area_cells); reports weigh an area in the worker, with the same cells and shares
# (insights/weighing.py). Areas arrive in EPSG:4326 and are evaluated in EPSG:3035, an
# equal-area projection.
# A share under MIN_SHARE (a 2.5 cm strip along a 250 m cell's edge) is reprojection
# noise of an edge drawn along the grid (4326 <-> 3035 round trips drift ~0.3 mm),
# not a covered cell.
MIN_SHARE = 1e-4
# A cell wholly inside the area is all in it: only the cells on its edge are intersected.
CELL_SHARES_SQL = """
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
    what the operator's pipeline said of each (its manifest), from the catalogue of releases."""
    return catalogue().sources(kind=kind.name, policy=policy.pk, version=version, start=start, end=end)


def area_cells(*, geometry: GEOSGeometry) -> AreaCells:
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH {CELL_SHARES_SQL}"
            " SELECT (SELECT ST_Area(g) FROM area) / 1e6,"
            "        coalesce((SELECT ST_Area(ST_Intersection(area.g, coverage.geometry))"
            "                  FROM area, insights_coverage coverage), 0) / 1e6,"
            "        (SELECT count(*) FROM covered)",
            {"geometry": bytes(geometry.ewkb), "min_share": MIN_SHARE},
        )
        area_km2, covered_km2, cell_count = cursor.fetchone()
    return AreaCells(area_km2=area_km2, covered_km2=covered_km2, cell_count=cell_count)


# The grid's cells in a span of rows and columns, by their ids (insights.grid.cell_id: row ×
# ROW + column): the primary key only, no PostGIS (its first use in a connection costs 30-150 ms).
_CELLS_IN_SPAN_SQL = f"""
    SELECT coalesce(array_agg(c.id ORDER BY c.id), '{{}}')
    FROM generate_series(%(first_row)s::bigint, %(last_row)s::bigint) grid_row
    JOIN insights_cell c
      ON c.id BETWEEN grid_row * {ROW} + %(first_column)s::bigint AND grid_row * {ROW} + %(last_column)s::bigint
"""


def cells_in_span(first_row: int, last_row: int, first_column: int, last_column: int) -> np.ndarray:
    """The ids of the grid's cells in the rows and columns given, ascending."""
    connection.ensure_connection()
    span = {"first_row": first_row, "last_row": last_row, "first_column": first_column, "last_column": last_column}
    # Django's cursors bind on the client, which gives text results only: an array in binary decodes faster.
    with psycopg.Cursor(connection.connection) as cursor:
        (ids,) = cursor.execute(_CELLS_IN_SPAN_SQL, span, binary=True).fetchone()
    return np.array(ids, dtype=np.int64)


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
    """{region id: (code, name)} of the loaded regions among the ids, by id (insights/regions.py)."""
    loaded = regions()
    return {region: loaded[region] for region in sorted(ids) if region in loaded}


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


presence_coverage = functools.partial(coverage, kind=PRESENCE)
