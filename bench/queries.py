"""The benchmark's SQL besides the engine: the bare SQL floor over the packed layout (the least
any report over it reads and decodes), the check of the engine's numbers over the unpacking
views, and the same sums in DuckDB over the released hourly values."""

import numpy as np

# The cells of an area with the share of each inside it, as the engine weighs them; materialized,
# so that each cell's share is computed once rather than again for each of its rows.
SHARES = """
    area AS (SELECT ST_Transform(ST_GeomFromEWKB(%(geometry)s), 3035) AS g),
    shares AS MATERIALIZED (
        SELECT c.id AS cell_id,
               CASE WHEN ST_Within(c.geometry, area.g) THEN 1.0
                    ELSE ST_Area(ST_Intersection(c.geometry, area.g)) / ST_Area(c.geometry) END AS share
        FROM insights_cell c JOIN area ON ST_Intersects(c.geometry, area.g)
    )
"""
# Per table of published values the engine's planner may read (insights_<kind>_released or
# its local day rollup), unpacked by its view (insights_<kind>_released_hours or _days): its
# suffix, its bucket column per granularity, its period filter and how many hourly values a row sums.
FLOOR_SOURCES = {
    "hour": ("_hours", {"hour": "t.hour"}, "t.hour >= %(start)s AND t.hour < %(end)s", "1"),
    "day": (
        "_days",
        {"day": "t.day", "week": "date_trunc('week', t.day)::date"},
        "t.day >= %(start_day)s AND t.day < %(end_day)s",
        "t.hours",
    ),
}
# The release of each dataset version up to the report's, under the current policy: what the engine reads.
RELEASED = "t.policy_id = %(policy)s AND t.dataset_version_id <= %(version)s"
FLOOR_FILTER = f"s.share >= %(min_share)s AND {RELEASED}"
# The packed columns a report over each source fetches (insights/packing.py).
PACKED = {"hour": ("", "t.published_hours, t.published_values"), "day": ("_day", "t.days, t.day_sums, t.day_hours")}
PACKED_KIND = {"footfall": "presence", "compare": "presence", "dwell": "dwell", "catchment": "home"}


def released(kind: str, suffix: str = "") -> str:
    return f"insights_{kind}_released{suffix}"


def packed_floor_sql(product: str, source: str) -> str:
    """The least any report over the packed layout reads, in one statement: the packed rows of
    the area's cells (or zones) and months, under the policy, of the segments the product sums."""
    suffix, columns = PACKED[source]
    months = "t.month >= %(first_month)s AND t.month < %(end_month)s"
    if product == "od-matrix":
        return (
            f"SELECT t.origin_id, t.destination, {columns} FROM {released('trips', suffix)} t"
            f" WHERE t.origin_id = ANY(%(zones)s) AND t.destination = ANY(%(zones)s) AND {months} AND {RELEASED}"
        )
    kind = PACKED_KIND[product]
    segments = " AND t.age_band = 0 AND t.gender = 0" if kind == "presence" else ""
    return (
        f"WITH {SHARES} SELECT t.cell_id, s.share, {columns}"
        f" FROM {released(kind, suffix)} t JOIN shares s USING (cell_id) WHERE {months} AND {FLOOR_FILTER}{segments}"
    )


def packed_floor(rows: list[tuple], source: str, *, weighted: bool) -> float:
    """What the floor does with its rows, (place, share or destination, packed columns...):
    decode every published value and sum it, weighted by its cell's share (numpy; no buckets,
    no result document). Returns the sum, so the work is not skipped."""
    from insights.packing import daily_values, hourly_values

    if not rows:
        return 0.0
    packed = [row[2:] for row in rows]
    if source == "hour":
        index, _, value = hourly_values([row[0] for row in packed], [row[1] for row in packed])
    else:
        index, _, value, _ = daily_values(*([row[column] for row in packed] for column in range(3)))
    if weighted:
        return float((value * np.array([row[1] for row in rows])[index]).sum())
    return float(value.sum())


def check_sql(product: str, source: str, granularity: str) -> str:
    """The product's sums in one statement over the unpacking views (untimed: the check of the
    engine's numbers, beside DuckDB's):
    footfall, the area's sums per bucket and per cell (for the map); dwell, those of
    everyone and the sums per bucket and band; catchment, those of everyone and the sums per
    home region over the period; od-matrix, the trips per bucket and pair of the zones. All of
    them over published values only, each sum with what a result states of its accuracy: how
    many hourly values were published, weighted by the cells' shares and not."""
    suffix, buckets, period, hours = FLOOR_SOURCES[source]
    bucket = buckets.get(granularity, buckets[source])
    published = f"sum({hours} * s.share), sum({hours})"
    if product == "footfall":
        return (
            f"WITH {SHARES} SELECT {bucket}, t.cell_id, sum(t.visits * s.share), {published}"
            f" FROM {released('presence', suffix)} t JOIN shares s USING (cell_id)"
            f" WHERE {period} AND {FLOOR_FILTER} AND t.age_band = 0 AND t.gender = 0"
            f" GROUP BY GROUPING SETS (({bucket}), (t.cell_id))"
        )
    if product == "dwell":
        # One scan: per bucket and band (everyone is band 0), and per cell and band (the map
        # shows everyone's).
        return (
            f"WITH {SHARES} SELECT {bucket}, t.cell_id, t.dwell_band, sum(t.visitors * s.share), {published}"
            f" FROM {released('dwell', suffix)} t JOIN shares s USING (cell_id)"
            f" WHERE {period} AND {FLOOR_FILTER}"
            f" GROUP BY GROUPING SETS (({bucket}, t.dwell_band), (t.cell_id, t.dwell_band))"
        )
    if product == "compare":
        # Both periods (the two halves of the report's span) in one scan: their buckets.
        return (
            f"WITH {SHARES} SELECT {bucket}, NULL::bigint, sum(t.visits * s.share), {published}"
            f" FROM {released('presence', suffix)} t JOIN shares s USING (cell_id)"
            f" WHERE {period} AND {FLOOR_FILTER} AND t.age_band = 0 AND t.gender = 0"
            f" GROUP BY {bucket}"
        )
    if product == "catchment":
        return (
            f"WITH {SHARES} SELECT {bucket}, t.cell_id, NULL::smallint, sum(t.visitors * s.share), {published}"
            f" FROM {released('home', suffix)} t JOIN shares s USING (cell_id)"
            f" WHERE {period} AND {FLOOR_FILTER} AND t.home_region = 0"
            f" GROUP BY GROUPING SETS (({bucket}), (t.cell_id))"
            f" UNION ALL SELECT NULL, NULL, t.home_region, sum(t.visitors * s.share), {published}"
            f" FROM {released('home', suffix)} t JOIN shares s USING (cell_id)"
            f" WHERE {period} AND {FLOOR_FILTER} AND t.home_region > 0"
            " GROUP BY t.home_region"
        )
    return (
        f"SELECT {bucket}, t.origin_id, t.destination, sum(t.trips), sum({hours}) FROM {released('trips', suffix)} t"
        f" WHERE t.origin_id = ANY(%(zones)s) AND t.destination = ANY(%(zones)s) AND {period}"
        f" AND {RELEASED} GROUP BY 1, 2, 3"
    )


def duckdb_sql(product: str, granularity: str) -> str:
    """The same over the released hourly values in DuckDB (exported from PostgreSQL: the
    presence's everyone rows, every published dwell, home and trips value); home regions and
    zones by region id, as in PostgreSQL."""
    bucket = {"hour": "p.hour", "day": "date_trunc('day', p.hour)", "week": "date_trunc('week', p.hour)"}[granularity]
    period = "p.hour >= $start::TIMESTAMPTZ AND p.hour < $end::TIMESTAMPTZ"
    published = "sum(s.share), count(*)"  # what a result states of its accuracy, as in check_sql
    if product == "footfall":
        return (
            f"SELECT epoch({bucket}) AS bucket, p.cell_id, sum(p.visits * s.share), {published}"
            f" FROM presence p JOIN shares s USING (cell_id) WHERE {period}"
            " GROUP BY GROUPING SETS ((bucket), (p.cell_id))"
        )
    if product == "dwell":
        return (
            f"SELECT epoch({bucket}) AS bucket, p.cell_id, p.dwell_band, sum(p.visitors * s.share), {published}"
            f" FROM dwell p JOIN shares s USING (cell_id) WHERE {period}"
            " GROUP BY GROUPING SETS ((bucket, p.dwell_band), (p.cell_id, p.dwell_band))"
        )
    if product == "compare":
        return (
            f"SELECT epoch({bucket}) AS bucket, NULL::BIGINT, sum(p.visits * s.share), {published}"
            f" FROM presence p JOIN shares s USING (cell_id) WHERE {period} GROUP BY bucket"
        )
    if product == "catchment":
        return (
            f"SELECT epoch({bucket}) AS bucket, p.cell_id, NULL::SMALLINT, sum(p.visitors * s.share), {published}"
            f" FROM home p JOIN shares s USING (cell_id) WHERE {period} AND p.home_region = 0"
            " GROUP BY GROUPING SETS ((bucket), (p.cell_id))"
            f" UNION ALL SELECT NULL, NULL, p.home_region, sum(p.visitors * s.share), {published}"
            f" FROM home p JOIN shares s USING (cell_id) WHERE {period} AND p.home_region > 0"
            " GROUP BY p.home_region"
        )
    return (
        f"SELECT epoch({bucket}) AS bucket, p.origin_id, p.destination, sum(p.trips), count(*) FROM trips p"
        f" WHERE p.origin_id IN (SELECT zone FROM zones) AND p.destination IN (SELECT zone FROM zones) AND {period}"
        " GROUP BY 1, 2, 3"
    )


# Nothing may be downloaded: ICU (time zones) and Parquet are linked into the duckdb wheel.
DUCKDB_CONFIG = {"autoinstall_known_extensions": False}
