"""Releases: the privacy decision, taken once per dataset version and policy.

A release decides, for every value of a dataset version (a cell-hour and segment, or a zone
pair and hour), whether it is published and as what:

1. a value under k, or one that noise and rounding would publish under k, is withheld;
2. inside each cell-hour's table of breakdowns, where a total is published and a part is not
   (withheld, or absent upstream), enough further parts are withheld that the total minus its
   published parts (what the hidden parts and the people of unknown segment add up to) is
   either nobody, or k or more people spread over at least two hidden parts; a part withheld
   for one margin is checked again in the others (age and gender of one cell-hour), until no
   margin needs more. Where every part is published, nothing is hidden: the rest is people of
   unknown segment and the rounding of extrapolated counts, no breakdown value;
3. a published value is the value plus optional sticky noise (seeded by a secret and by what
   the value counts, never by who asks), rounded to a base.

Published values go to insights_<kind>_released (hourly, by UTC month) and its local day
rollup, packed (insights/packing.py); withheld values are not stored there at all. Reports read nothing else, so what
any set of reports shows is a function of the published values (docs/privacy.md).
"""

import datetime as dt
import functools
import hashlib
import time
from collections import Counter

from django.conf import settings
from django.db import connection, transaction

from insights.kinds import KINDS, AggregateKind, RegionCodes
from insights.models import Coverage, DatasetVersion, Region, Release, ReleasePolicy
from insights.packing import (
    PACKED_DAY_HOURS_SQL,
    PACKED_DAYS_SQL,
    PACKED_HOURS_SQL,
    PACKED_SUMS_SQL,
    PACKED_VALUES_SQL,
)
from insights.partitions import attach, month_start, months, next_month, partition, partitions
from insights.segments import ALL
from insights.signals import release_landed

BELOW_K = "below_k"
COMPLEMENTARY = "complementary"
# Index builds of a month's released rows sort in memory rather than on disk.
INDEX_BUILD_MEMORY = "512MB"
# A month's breakdown tables are grouped by cell-hour: millions of groups, hashed in memory.
GROUPING_MEMORY = "256MB"


def released_table(kind: AggregateKind) -> str:
    return f"{kind.table}_released"


def noise_key() -> str:
    """A fingerprint of the noise secret, so that another secret is another policy."""
    return hashlib.sha256(settings.PRIVACY_NOISE_SECRET.encode()).hexdigest()[:16]


def release_policy_of_settings() -> ReleasePolicy:
    """The policy the settings describe, recorded the first time it is used. Reports read
    insights.selectors.current_release_policy(), which is this one once every dataset version
    is released under it."""
    policy, _ = ReleasePolicy.objects.get_or_create(
        k=settings.PRIVACY_K,
        round_to=settings.PRIVACY_ROUND_TO,
        noise_scale=settings.PRIVACY_NOISE_SCALE,
        noise_key=noise_key(),
    )
    return policy


def releases_build(*, policy: ReleasePolicy | None = None, on_release=None) -> list[Release]:
    """Build the release of every loaded dataset version that has none under the policy
    (the current one by default): after a change of policy, before reports use it."""
    policy = policy or release_policy_of_settings()
    built = []
    for version in DatasetVersion.objects.exclude(releases__policy=policy).order_by("pk"):
        release = release_build(version=version, policy=policy)
        built.append(release)
        if on_release:
            on_release(release)
    for name in {release.dataset_version.kind for release in built}:
        release_analyze(kind=KINDS[name])
    releases_landed(built)
    return built


def release_build(*, version: DatasetVersion, policy: ReleasePolicy) -> Release:
    """Decide and publish every value of the dataset version under the policy, all or nothing;
    a release built before is returned as it is."""
    existing = Release.objects.filter(dataset_version=version, policy=policy).first()
    if existing:
        return existing
    kind = KINDS[version.kind]
    started = time.monotonic()
    counts: Counter = Counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL maintenance_work_mem = '{INDEX_BUILD_MEMORY}'")
        cursor.execute(f"SET LOCAL work_mem = '{GROUPING_MEMORY}'")
        _fresh_temp_table(
            cursor,
            "release_days",
            f"{kind.place_key} {kind.place_type}, day date, {_segment_columns(kind)}, value bigint, hours integer",
        )
        published_months = partitions(cursor, released_table(kind))
        loaded_months = partitions(cursor, kind.raw_table)  # retention may have dropped some
        for month in months(version.period_start, version.period_end):
            if month not in loaded_months:
                continue
            _decide(cursor, kind, version=version, policy=policy, month=month)
            counts.update(_month_counts(cursor, kind))
            _publish(cursor, kind, version=version, policy=policy, month=month, attached=month in published_months)
            published_months.add(month)
        _roll_up(cursor, kind, version=version, policy=policy)
        if kind.in_grid:
            _cover(cursor)
        release = Release.objects.create(
            dataset_version=version,
            policy=policy,
            duration_seconds=time.monotonic() - started,
            **counts,
        )
    return release


def releases_landed(releases: list[Release]) -> None:
    """Tell the rest of the service of releases built and analysed (insights.signals.release_landed),
    once committed: at once outside a transaction. A receiver that fails is logged and leaves
    the releases as they are."""
    for release in releases:
        transaction.on_commit(functools.partial(release_landed.send, sender=Release, release=release), robust=True)


def release_analyze(*, kind: AggregateKind) -> None:
    """Fresh planner statistics for the released tables, after new releases."""
    with connection.cursor() as cursor:
        for suffix in ("", "_day"):
            cursor.execute(f"ANALYZE {released_table(kind)}{suffix}")


def _segment_columns(kind: AggregateKind) -> str:
    return ", ".join(f"{name} smallint" for name in kind.segments)


def _fresh_temp_table(cursor, name: str, columns: str) -> None:
    # Dropped first: ON COMMIT DROP does not fire inside an enclosing transaction.
    cursor.execute(f"DROP TABLE IF EXISTS {name}")
    cursor.execute(f"CREATE TEMP TABLE {name} ({columns}) ON COMMIT DROP")


def _decide(cursor, kind: AggregateKind, *, version: DatasetVersion, policy: ReleasePolicy, month: dt.date) -> None:
    """release_work: the month's values of the version with what each would be published as,
    and why it is withheld (NULL: published)."""
    place, segments = kind.place_key, list(kind.segments)
    columns = ", ".join([place, "hour", *segments])
    noise = _noise_sql(kind, policy)
    cursor.execute("DROP TABLE IF EXISTS release_work")
    cursor.execute(
        f"CREATE TEMP TABLE release_work ON COMMIT DROP AS"
        f" SELECT {columns}, exact, published,"
        f"  CASE WHEN exact < %(k)s OR published < %(k)s THEN '{BELOW_K}' END AS withheld"
        f" FROM (SELECT {columns}, exact,"
        f"        (%(round_to)s * floor((exact + {noise})::float8 / %(round_to)s + 0.5))::bigint AS published"
        f"       FROM (SELECT {columns}, {kind.value}::bigint AS exact FROM {kind.table}"
        # The month's days as well as its hours: the view's hour is computed and prunes no partition.
        f"             WHERE dataset_version_id = %(version)s AND day >= %(first_day)s AND day < %(after_day)s"
        f"             AND hour >= %(from)s AND hour < %(to)s) raw) decided",
        {
            "k": policy.k,
            "round_to": policy.round_to,
            "scale": policy.noise_scale,
            "secret": settings.PRIVACY_NOISE_SECRET.encode(),
            "kind": kind.name,
            "version": version.pk,
            "from": month_start(month),
            "to": month_start(next_month(month)),
            "first_day": month,
            "after_day": next_month(month),
        },
    )
    margins = _margins(kind)
    while True:
        withheld = sum(_protect_margin(cursor, kind, segment, parts, policy=policy) for segment, parts in margins)
        # With one margin, its closed form settles it in one pass; margins that share values
        # (age and gender) are checked again until none withholds more. Each pass withholds
        # at least one more value, so this ends.
        if not withheld or len(margins) == 1:
            return


def _noise_sql(kind: AggregateKind, policy: ReleasePolicy) -> str:
    """Laplace noise of the policy's scale, drawn from an HMAC of what the value counts (its
    kind, place, hour and segment) and of the scale: the same value always gets the same
    noise, and two scales draw apart (the same draw at two scales would let one release's
    noise cancel the other's)."""
    if not policy.noise_scale:
        return "0"
    counted = ", ".join(["%(scale)s::text", kind.place_key, "extract(epoch FROM hour)::bigint", *kind.segments])
    digest = f"hmac(convert_to(concat_ws('|', %(kind)s, {counted}), 'UTF8'), %(secret)s, 'sha256')"
    # 56 bits of the digest as a uniform number in (-0.5, 0.5)
    bits = f"('x' || encode(substring({digest} FROM 1 FOR 7), 'hex'))::bit(56)::bigint"
    uniform = f"(({bits} + 0.5) / 72057594037927936.0 - 0.5)"
    return f"(-%(scale)s * sign({uniform}) * ln(1 - 2 * abs({uniform})))"


def _margins(kind: AggregateKind) -> list[tuple[str, int]]:
    """The breakdown tables a cell-hour publishes: per segment that has a total (*), how many
    parts the total breaks down into."""
    margins = []
    for name, labels in kind.labels().items():
        if labels[0] != ALL:
            continue  # no total: every value stands alone (trips per destination)
        parts = Region.objects.count() if isinstance(kind.segments[name], RegionCodes) else len(labels) - 1
        margins.append((name, parts))
    return margins


def _protect_margin(cursor, kind: AggregateKind, segment: str, parts: int, *, policy: ReleasePolicy) -> int:
    """Withhold, in every breakdown table of this segment, the fewest smallest published parts
    that leave nothing to recompute; returns how many values it withheld.

    Where the total is published, the rest (total minus published parts) must be nobody, or k
    or more over two hidden parts or more (hidden: withheld, or absent upstream). Where the
    total is withheld, its parts must not all be published, or they would add up to it.

    The rest after withholding the m smallest parts grows with m, so one ordered pass finds the
    least m. If no m is enough (a total of one part), the total is withheld too."""
    group = ", ".join([kind.place_key, "hour", *(name for name in kind.segments if name != segment)])
    is_safe = (
        "(CASE WHEN total_withheld THEN hidden >= 1 ELSE hidden = 0 OR rest = 0 OR (rest >= %(k)s AND hidden >= 2) END)"
    )
    params = {"k": policy.k, "parts": parts}
    cursor.execute(f"SELECT EXISTS (SELECT FROM release_work WHERE {segment} > 0 AND withheld IS NULL)")
    if not cursor.fetchone()[0]:
        return 0  # nothing broken down by this segment is published: no margin to protect
    cursor.execute("DROP TABLE IF EXISTS release_margins")
    cursor.execute(
        f"CREATE TEMP TABLE release_margins ON COMMIT DROP AS"
        f" SELECT * FROM ("
        f"  SELECT {group}, total_withheld, total - published_sum AS rest, %(parts)s - published_parts AS hidden"
        f"  FROM (SELECT {group},"
        f"         max(exact) FILTER (WHERE {segment} = 0) AS total,"
        f"         bool_or({segment} = 0 AND withheld IS NOT NULL) AS total_withheld,"
        f"         count(*) FILTER (WHERE {segment} > 0 AND withheld IS NULL) AS published_parts,"
        f"         coalesce(sum(exact) FILTER (WHERE {segment} > 0 AND withheld IS NULL), 0) AS published_sum"
        f"        FROM release_work GROUP BY {group}) margin"
        f"  WHERE total IS NOT NULL AND published_parts > 0) checked"
        f" WHERE NOT {is_safe}",
        params,
    )
    if not cursor.rowcount:
        return 0
    join = " AND ".join(f"w.{column} = m.{column}" for column in group.split(", "))
    cursor.execute("DROP TABLE IF EXISTS release_candidates")
    cursor.execute(
        f"CREATE TEMP TABLE release_candidates ON COMMIT DROP AS"
        f" SELECT w.{kind.place_key}, w.hour, {', '.join(f'w.{name}' for name in kind.segments)},"
        f"  m.total_withheld, row_number() OVER parts AS rank,"
        f"  m.rest + sum(w.exact) OVER parts AS rest, m.hidden + row_number() OVER parts AS hidden"
        f" FROM release_work w JOIN release_margins m ON {join}"
        f" WHERE w.{segment} > 0 AND w.withheld IS NULL"
        f" WINDOW parts AS (PARTITION BY {', '.join(f'w.{column}' for column in group.split(', '))}"
        f"                  ORDER BY w.exact, w.{segment})",
        params,
    )
    enough = (
        f"WITH enough AS ("
        f"  SELECT {group}, min(rank) FILTER (WHERE {is_safe}) AS parts FROM release_candidates GROUP BY {group})"
    )
    key = " AND ".join(f"w.{column} = c.{column}" for column in [kind.place_key, "hour", *kind.segments])
    cursor.execute(
        f"{enough} UPDATE release_work w SET withheld = '{COMPLEMENTARY}'"
        f" FROM release_candidates c JOIN enough e USING ({group})"
        f" WHERE {key} AND c.rank <= coalesce(e.parts, c.rank)",
        params,
    )
    withheld = cursor.rowcount
    total_key = " AND ".join(f"w.{column} = e.{column}" for column in group.split(", "))
    cursor.execute(
        f"{enough} UPDATE release_work w SET withheld = '{COMPLEMENTARY}'"
        f" FROM enough e WHERE e.parts IS NULL AND {total_key} AND w.{segment} = 0 AND w.withheld IS NULL",
        params,
    )
    withheld += cursor.rowcount
    cursor.execute("DROP TABLE release_margins")
    cursor.execute("DROP TABLE release_candidates")
    return withheld


def _month_counts(cursor, kind: AggregateKind) -> dict[str, int]:
    """The month's decisions, counted; the totals are everyone's values (every value for a
    kind without totals)."""
    everyone = " AND ".join(f"{name} = 0" for name, labels in kind.labels().items() if labels[0] == ALL) or "true"
    cursor.execute(
        f"SELECT count(*), count(*) FILTER (WHERE withheld IS NULL),"
        f" count(*) FILTER (WHERE withheld = '{BELOW_K}'), count(*) FILTER (WHERE withheld = '{COMPLEMENTARY}'),"
        f" coalesce(sum(exact) FILTER (WHERE {everyone}), 0),"
        f" coalesce(sum(published) FILTER (WHERE {everyone} AND withheld IS NULL), 0)"
        f" FROM release_work"
    )
    values, released, below_k, complementary, total_exact, total_released = cursor.fetchone()
    return {
        "values": values,
        "released": released,
        "withheld_below_k": below_k,
        "withheld_complementary": complementary,
        "total_exact": total_exact,
        "total_released": total_released,
    }


def _publish(
    cursor, kind: AggregateKind, *, version: DatasetVersion, policy: ReleasePolicy, month: dt.date, attached: bool
) -> None:
    """Store the month's published values, and add their local days to release_days. A month
    seen for the first time gets a fresh partition, keyed after its rows are in."""
    table = released_table(kind)
    target = table if attached else partition(table, month)
    if not attached:
        # Rows up to 3 kB (a month's hours) stay inline and uncompressed: read without detoasting.
        cursor.execute(f"CREATE TABLE {target} (LIKE {table} INCLUDING CONSTRAINTS) WITH (toast_tuple_target = 8160)")
    place, segments = kind.place_key, ", ".join(kind.segments)
    cursor.execute(
        f"INSERT INTO {target} (month, {place}, {segments}, dataset_version_id, policy_id,"
        f" published_hours, published_values)"
        f" SELECT %(month)s, {place}, {segments}, %(version)s, %(policy)s, {PACKED_HOURS_SQL}, {PACKED_VALUES_SQL}"
        f" FROM (SELECT {place}, hour, {segments}, published AS value FROM release_work WHERE withheld IS NULL) w"
        f" GROUP BY {place}, {segments} ORDER BY {place}, {segments}",  # in key order: an area's rows sit on few pages
        {"version": version.pk, "policy": policy.pk, "month": month_start(month)},
    )
    if not attached:
        cursor.execute(f"ALTER TABLE {target} ADD PRIMARY KEY ({_packed_key(kind)})")
        attach(cursor, table, month)
    if kind.in_grid:
        _register_cells(cursor)
    cursor.execute(
        f"INSERT INTO release_days"
        f" SELECT {place}, (hour AT TIME ZONE %(zone)s)::date, {segments}, sum(published), count(*)"
        f" FROM release_work WHERE withheld IS NULL GROUP BY 1, 2, {segments}",
        {"zone": settings.ROLLUP_TIME_ZONE},
    )


def _register_cells(cursor) -> None:
    """The grid cells a report can cover are those with a published value: a cell whose every
    value is withheld must not show, even as an empty cell, or its withheld values would
    change a report. A cell's id gives its corner (insights.grid.cell_id)."""
    cursor.execute(
        "INSERT INTO insights_cell (id, code, geometry)"
        " SELECT id, format('CRS3035RES%%smN%%sE%%s', %(res)s, northing, easting),"
        "  ST_MakeEnvelope(easting, northing, easting + %(res)s, northing + %(res)s, 3035)"
        " FROM (SELECT DISTINCT cell_id AS id, (cell_id / 100000) * %(res)s AS northing,"
        "        (cell_id %% 100000) * %(res)s AS easting FROM release_work WHERE withheld IS NULL) published"
        " ON CONFLICT (id) DO NOTHING",
        {"res": settings.GRID_RESOLUTION_M},
    )


def _cover(cursor) -> None:
    """Coverage: the hull of the cells with a published value, so that whether an area is sold
    depends on the releases only, never on a withheld value."""
    cursor.execute(
        f"INSERT INTO {Coverage._meta.db_table} (id, geometry, updated_at)"
        " SELECT 1, ST_ConvexHull(ST_Collect(geometry)), now() FROM insights_cell HAVING count(*) > 0"
        " ON CONFLICT (id) DO UPDATE SET geometry = excluded.geometry, updated_at = excluded.updated_at"
    )


def _roll_up(cursor, kind: AggregateKind, *, version: DatasetVersion, policy: ReleasePolicy) -> None:
    """The published values per local day, packed per local month; a day split between two UTC
    months is summed here. Weeks are summed from the days."""
    table, place, segments = released_table(kind), kind.place_key, ", ".join(kind.segments)
    cursor.execute(
        f"INSERT INTO {table}_day ({place}, month, {segments}, dataset_version_id, policy_id,"
        f" days, day_sums, day_hours)"
        f" SELECT {place}, date_trunc('month', day)::date, {segments}, %(version)s, %(policy)s,"
        f"  {PACKED_DAYS_SQL}, {PACKED_SUMS_SQL}, {PACKED_DAY_HOURS_SQL}"
        f" FROM (SELECT {place}, day, {segments}, sum(value) AS value, sum(hours) AS hours FROM release_days"
        f"       GROUP BY {place}, day, {segments}) days"
        # in key order: an area's rows sit on few pages
        f" GROUP BY {place}, 2, {segments} ORDER BY {place}, 2, {segments}",
        {"version": version.pk, "policy": policy.pk},
    )


def _packed_key(kind: AggregateKind) -> str:
    return f"{kind.place_key}, month, {', '.join(kind.segments)}, policy_id, dataset_version_id"
