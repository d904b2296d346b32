"""Reads of the data side: coverage, cells under an area, and aggregate sums."""

import datetime as dt
from dataclasses import dataclass

from django.contrib.gis.geos import GEOSGeometry
from django.db import connection
from django.db.models import Max, Min

from insights.models import DatasetVersion

# The cells an area covers, each weighted by the share of the cell inside the area.
# Areas arrive in EPSG:4326 and are evaluated in EPSG:3035, an equal-area projection.
# A share under MIN_SHARE (a 2.5 cm strip along a 250 m cell's edge) is reprojection
# noise of an edge drawn along the grid (4326 <-> 3035 round trips drift ~0.3 mm),
# not a covered cell.
MIN_SHARE = 1e-4
_CELL_SHARES = """
    area AS (SELECT ST_Transform(ST_GeomFromEWKB(%(geometry)s), 3035) AS g),
    shares AS (
        SELECT c.id AS cell_id,
               ST_Area(ST_Intersection(c.geometry, area.g)) AS inside_m2,
               ST_Area(ST_Intersection(c.geometry, area.g)) / ST_Area(c.geometry) AS share
        FROM insights_cell c JOIN area ON ST_Intersects(c.geometry, area.g)
    ),
    covered AS (SELECT * FROM shares WHERE share >= %(min_share)s)
"""


@dataclass(frozen=True)
class PresenceCoverage:
    start: dt.datetime
    end: dt.datetime
    latest_version: int


@dataclass(frozen=True)
class AreaCells:
    area_km2: float
    covered_km2: float
    cell_count: int


def presence_coverage() -> PresenceCoverage | None:
    """The period the loaded presence data spans, or None before the first load."""
    span = DatasetVersion.objects.filter(kind=DatasetVersion.Kind.PRESENCE).aggregate(
        start=Min("period_start"), end=Max("period_end"), latest=Max("id")
    )
    if span["latest"] is None:
        return None
    return PresenceCoverage(start=span["start"], end=span["end"], latest_version=span["latest"])


def area_cells(*, geometry: GEOSGeometry) -> AreaCells:
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH {_CELL_SHARES}"
            " SELECT (SELECT ST_Area(g) FROM area) / 1e6,"
            "        coalesce(sum(inside_m2), 0) / 1e6,"
            "        count(*)"
            " FROM covered",
            {"geometry": bytes(geometry.ewkb), "min_share": MIN_SHARE},
        )
        area_km2, covered_km2, cell_count = cursor.fetchone()
    return AreaCells(area_km2=area_km2, covered_km2=covered_km2, cell_count=cell_count)


def presence_totals(
    *, geometry: GEOSGeometry, start: dt.datetime, end: dt.datetime, granularity: str, time_zone: str, version: int
) -> dict[dt.datetime, float]:
    """Area-weighted sums of people present (all ages, all genders) per local time bucket."""
    # Hour buckets are the stored UTC hours; coarser ones are local calendar units.
    bucket = "p.hour" if granularity == "hour" else "date_trunc(%(granularity)s, p.hour, %(time_zone)s)"
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH {_CELL_SHARES}"
            f" SELECT {bucket} AS bucket, sum(p.visits * s.share)"
            " FROM insights_presence p JOIN covered s ON s.cell_id = p.cell_id"
            " WHERE p.hour >= %(start)s AND p.hour < %(end)s"
            "   AND p.age_band = 0 AND p.gender = 0"  # 0: all ages, all genders (insights.segments)
            "   AND p.dataset_version_id <= %(version)s"
            " GROUP BY 1",
            {
                "geometry": bytes(geometry.ewkb),
                "start": start,
                "end": end,
                "granularity": granularity,
                "time_zone": time_zone,
                "version": version,
                "min_share": MIN_SHARE,
            },
        )
        return dict(cursor.fetchall())
