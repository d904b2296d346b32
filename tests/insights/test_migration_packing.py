"""Migration 0010 repacks the released tables of a database at 0009: every published value, day
sum and hour count must come out of the packed rows as it went in, read through the views and
through the engine's own decoder (insights/packing.py), which does not share the views' SQL.

0010 has no reverse, so the test records it unapplied and puts back the released tables as
0008 made them (with 0008's own DDL): that is the schema of a database at 0009. It all happens
in the test's transaction, which PostgreSQL rolls back with the DDL: later tests see the
database as migrated, whatever this one leaves."""

import datetime as dt
import importlib

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from insights.kinds import KINDS
from insights.packing import daily_values, hourly_values
from insights.partitions import attach, partitions

UTC = dt.UTC
BEFORE_PACKING = ("insights", "0009_coverage")
PACKING = ("insights", "0010_packed_releases")
MARCH, APRIL = dt.date(2026, 3, 1), dt.date(2026, 4, 1)
FIRST_HOUR_OF_MARCH = dt.datetime(2026, 3, 1, 0, tzinfo=UTC)  # the bitmap's first bit
LAST_HOUR_OF_MARCH = dt.datetime(2026, 3, 31, 23, tzinfo=UTC)  # its 744th and last bit
CELL, OTHER_CELL = 2_870_004_512, 2_870_004_513  # grid ids above 2^31, as real ones are
ORIGIN, LAST_ORIGIN = 3, 32_767  # region ids are smallints
VERSION, LATER_VERSION, TRIPS_VERSION = 41, 42, 43
POLICY, OTHER_POLICY = 7, 8
# 0x01020304: read in the wrong byte order it is another number (67305985)
BYTE_ORDER_PROBE = 16_909_060

# Old layout, one row per published value: (place, hour, *segment codes, value, version, policy).
# The old key is (place, hour, segments, policy): a later version publishes other hours.
HOURLY = {
    "presence": [
        (CELL, FIRST_HOUR_OF_MARCH, 0, 0, 70_000, VERSION, POLICY),
        (CELL, FIRST_HOUR_OF_MARCH, 2, 0, 65_536, VERSION, POLICY),
        (CELL, FIRST_HOUR_OF_MARCH, 0, 1, 65_537, VERSION, POLICY),
        (CELL, FIRST_HOUR_OF_MARCH, 0, 0, 70_010, VERSION, OTHER_POLICY),
        (CELL, FIRST_HOUR_OF_MARCH + dt.timedelta(hours=7), 0, 0, 256, VERSION, POLICY),  # last bit of byte 1
        (CELL, FIRST_HOUR_OF_MARCH + dt.timedelta(hours=8), 0, 0, 2, VERSION, POLICY),  # first bit of byte 2
        (CELL, dt.datetime(2026, 3, 15, 12, tzinfo=UTC), 0, 0, 123_456, LATER_VERSION, POLICY),
        (CELL, LAST_HOUR_OF_MARCH, 0, 0, BYTE_ORDER_PROBE, VERSION, POLICY),
        (CELL, LAST_HOUR_OF_MARCH, 3, 2, 2_000_000_000, VERSION, POLICY),
        (OTHER_CELL, LAST_HOUR_OF_MARCH, 0, 0, 3, VERSION, POLICY),
        (CELL, dt.datetime(2026, 4, 1, 0, tzinfo=UTC), 0, 0, 99_999, VERSION, POLICY),
        (OTHER_CELL, dt.datetime(2026, 4, 30, 23, tzinfo=UTC), 2, 1, 70_001, VERSION, POLICY),
        (OTHER_CELL, dt.datetime(2026, 4, 10, 5, tzinfo=UTC), 0, 0, 1_000_000, LATER_VERSION, OTHER_POLICY),
    ],
    "dwell": [
        (CELL, FIRST_HOUR_OF_MARCH, 0, 80_000, VERSION, POLICY),
        (CELL, LAST_HOUR_OF_MARCH, 4, BYTE_ORDER_PROBE, VERSION, POLICY),
        (OTHER_CELL, dt.datetime(2026, 4, 30, 23, tzinfo=UTC), 1, 65_538, LATER_VERSION, OTHER_POLICY),
    ],
    "home": [
        (CELL, FIRST_HOUR_OF_MARCH, 0, 90_000, VERSION, POLICY),
        (CELL, LAST_HOUR_OF_MARCH, 12, BYTE_ORDER_PROBE, VERSION, POLICY),
        (OTHER_CELL, dt.datetime(2026, 4, 30, 23, tzinfo=UTC), 3, 65_538, LATER_VERSION, OTHER_POLICY),
    ],
    "trips": [
        (ORIGIN, FIRST_HOUR_OF_MARCH, 31_000, 65_539, TRIPS_VERSION, POLICY),
        (ORIGIN, FIRST_HOUR_OF_MARCH, 31_000, 65_540, TRIPS_VERSION, OTHER_POLICY),
        (ORIGIN, FIRST_HOUR_OF_MARCH, LAST_ORIGIN, BYTE_ORDER_PROBE, TRIPS_VERSION, POLICY),
        (LAST_ORIGIN, LAST_HOUR_OF_MARCH, ORIGIN, 2, TRIPS_VERSION, POLICY),
        (ORIGIN, dt.datetime(2026, 4, 2, 10, tzinfo=UTC), 17, 1_234_567, TRIPS_VERSION, POLICY),
    ],
}
# Old day rollup, a row per local day: (place, day, *segment codes, value, hours, version, policy).
DAILY = {
    "presence": [
        (CELL, dt.date(2026, 3, 1), 0, 0, 5_000_000_000, 24, VERSION, POLICY),  # a sum above 2^32
        (CELL, dt.date(2026, 3, 1), 0, 0, 70_010, 1, VERSION, OTHER_POLICY),
        (CELL, dt.date(2026, 3, 29), 0, 0, 300_000, 23, VERSION, POLICY),  # spring forward in Berlin
        (CELL, dt.date(2026, 3, 31), 0, 0, BYTE_ORDER_PROBE, 1, VERSION, POLICY),
        (CELL, dt.date(2026, 3, 31), 3, 2, 2_000_000_000, 1, VERSION, POLICY),
        (CELL, dt.date(2026, 3, 15), 0, 0, 123_456, 1, LATER_VERSION, POLICY),
        (CELL, dt.date(2026, 4, 1), 0, 0, 99_999, 1, VERSION, POLICY),
        (OTHER_CELL, dt.date(2026, 10, 25), 0, 0, 77_777, 25, LATER_VERSION, OTHER_POLICY),  # fall back
    ],
    "dwell": [(CELL, dt.date(2026, 3, 31), 4, BYTE_ORDER_PROBE, 1, VERSION, POLICY)],
    "home": [(CELL, dt.date(2026, 3, 31), 12, BYTE_ORDER_PROBE, 1, VERSION, POLICY)],
    "trips": [
        (ORIGIN, dt.date(2026, 3, 1), 31_000, 65_539, 1, TRIPS_VERSION, POLICY),
        (ORIGIN, dt.date(2026, 3, 1), 31_000, 65_540, 1, TRIPS_VERSION, OTHER_POLICY),
        (LAST_ORIGIN, dt.date(2026, 3, 31), ORIGIN, 2, 1, TRIPS_VERSION, POLICY),
        (ORIGIN, dt.date(2026, 4, 2), 17, 1_234_567, 1, TRIPS_VERSION, POLICY),
    ],
}


def released(kind_name: str) -> str:
    return f"{KINDS[kind_name].table}_released"


def columns(kind_name: str, *, period: str) -> str:
    kind = KINDS[kind_name]
    rollup = ", hours" if period != "hour" else ""
    return ", ".join([kind.place_key, period, *kind.segments, kind.value]) + f"{rollup}, dataset_version_id, policy_id"


def migrate(targets) -> None:
    MigrationExecutor(connection).migrate(targets)


def rewind_to_before_packing() -> None:
    """A database at 0009: the later migrations that can be reversed reversed, 0010 recorded
    unapplied, and the released tables as 0008 made them."""
    MigrationExecutor(connection).migrate([PACKING])
    MigrationExecutor(connection).migrate([BEFORE_PACKING], fake=True)
    releases_0008 = importlib.import_module("insights.migrations.0008_releases")
    with connection.cursor() as cursor:
        for kind_name in KINDS:
            table = released(kind_name)
            cursor.execute(f"DROP VIEW {table}_hours, {table}_days")
            cursor.execute(f"DROP TABLE {table}, {table}_day")
            cursor.execute(f"DROP TABLE IF EXISTS {table}_week")  # left only by a faulty 0010: asserted below
        for statement in releases_0008.released_tables().split(";\n"):
            cursor.execute(statement)


def publish_the_old_way(kind_name: str) -> None:
    """The rows of HOURLY and DAILY in the old tables, in UTC month partitions as the old
    builder made them, and a week rollup row."""
    table, kind = released(kind_name), KINDS[kind_name]
    with connection.cursor() as cursor:
        for month in sorted({hour.date().replace(day=1) for _, hour, *_ in HOURLY[kind_name]}):
            cursor.execute(f"CREATE TABLE {table}_p{month:%Y%m} (LIKE {table} INCLUDING CONSTRAINTS)")
            attach(cursor, table, month)
        placeholders = ", ".join(["%s"] * (len(kind.segments) + 5))
        cursor.executemany(
            f"INSERT INTO {table} ({columns(kind_name, period='hour')}) VALUES ({placeholders})",
            HOURLY[kind_name],
        )
        cursor.executemany(
            f"INSERT INTO {table}_day ({columns(kind_name, period='day')}) VALUES ({placeholders}, %s)",
            DAILY[kind_name],
        )
        place, hour, *segments, value, version, policy = HOURLY[kind_name][0]
        week = hour.date() - dt.timedelta(days=hour.weekday())
        cursor.execute(
            f"INSERT INTO {table}_week ({columns(kind_name, period='week')}) VALUES ({placeholders}, %s)",
            [place, week, *segments, value, 1, version, policy],
        )


def partitions_of(table: str) -> dict[str, tuple[int, str]]:
    """{partition name: (its oid, its bounds)}"""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, c.oid, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass",
            [table],
        )
        return {name: (oid, bounds) for name, oid, bounds in cursor.fetchall()}


def columns_of(relation: str) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            [relation],
        )
        return {name for (name,) in cursor.fetchall()}


def rows_of(relation: str, select: str) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {select} FROM {relation}")
        return sorted(cursor.fetchall())


def count(relation: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {relation}")
        return cursor.fetchone()[0]


def exists(relation: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [relation])
        return cursor.fetchone()[0]


def decoded_hours(kind_name: str) -> list[tuple]:
    """The packed hourly rows as the engine decodes them, one tuple per value like HOURLY."""
    kind = KINDS[kind_name]
    keys = f"{kind.place_key}, month, {', '.join(kind.segments)}, dataset_version_id, policy_id"
    packed = rows_of(released(kind_name), f"{keys}, published_hours, published_values")
    rows, hours, values = hourly_values([row[-2] for row in packed], [row[-1] for row in packed])
    found = []
    for row, hour, value in zip(rows.tolist(), hours.tolist(), values.tolist(), strict=True):
        place, month, *segments, version, policy = packed[row][:-2]
        found.append((place, month + dt.timedelta(hours=hour), *segments, value, version, policy))
    return sorted(found)


def decoded_days(kind_name: str) -> list[tuple]:
    """The packed day rows as the engine decodes them, one tuple per day like DAILY."""
    kind = KINDS[kind_name]
    keys = f"{kind.place_key}, month, {', '.join(kind.segments)}, dataset_version_id, policy_id"
    packed = rows_of(f"{released(kind_name)}_day", f"{keys}, days, day_sums, day_hours")
    rows, days, sums, counts = daily_values(*([row[i] for row in packed] for i in (-3, -2, -1)))
    found = []
    for row, day, total, hours in zip(rows.tolist(), days.tolist(), sums.tolist(), counts.tolist(), strict=True):
        place, month, *segments, version, policy = packed[row][:-3]
        found.append((place, month + dt.timedelta(days=day), *segments, total, hours, version, policy))
    return sorted(found)


def packed_rows(kind_name: str, rows: list[tuple]) -> int:
    """How many packed rows the old rows make: one per place, month (UTC for hours, local for
    days), segments, version and policy."""
    segments = len(KINDS[kind_name].segments)
    return len({(row[0], row[1].year, row[1].month, *row[2 : 2 + segments], *row[-2:]) for row in rows})


@pytest.mark.django_db  # the test's transaction, rolled back with its DDL: see the module's docstring
def test_repacking_the_released_tables_keeps_every_published_value_and_day():
    # Given a database at 0009 whose released tables hold values of two months, two versions
    # and two policies in the old layout, with day and week rollups
    rewind_to_before_packing()
    for kind_name in KINDS:
        publish_the_old_way(kind_name)
    old_partitions = {kind_name: partitions_of(released(kind_name)) for kind_name in KINDS}
    assert all(len(found) == 2 for found in old_partitions.values())  # March and April

    # When 0010 packs them, and every app is migrated to its latest migration
    migrate([PACKING])
    executor = MigrationExecutor(connection)
    migrate(executor.loader.graph.leaf_nodes())

    # Then the views and the engine's decoder give back exactly the rows of the old tables
    for kind_name in KINDS:
        table = released(kind_name)
        assert rows_of(f"{table}_hours", columns(kind_name, period="hour")) == sorted(HOURLY[kind_name]), kind_name
        assert decoded_hours(kind_name) == sorted(HOURLY[kind_name]), kind_name
        assert rows_of(f"{table}_days", columns(kind_name, period="day")) == sorted(DAILY[kind_name]), kind_name
        assert decoded_days(kind_name) == sorted(DAILY[kind_name]), kind_name
    # ... packed: a row per place, UTC month (local month for days), segments, version and policy
    for kind_name in KINDS:
        table = released(kind_name)
        assert count(table) == packed_rows(kind_name, HOURLY[kind_name]), kind_name
        assert count(f"{table}_day") == packed_rows(kind_name, DAILY[kind_name]), kind_name
    # ... the old partitions are gone, replaced by packed ones of the same UTC months and names,
    # which the release builder finds as its own
    for kind_name in KINDS:
        table = released(kind_name)
        new_partitions = partitions_of(table)
        assert set(new_partitions) == set(old_partitions[kind_name]), kind_name
        for name, (oid, bounds) in new_partitions.items():
            assert oid != old_partitions[kind_name][name][0], name
            assert bounds == old_partitions[kind_name][name][1], name
            assert {"published_hours", "published_values"} <= columns_of(name) and "hour" not in columns_of(name)
        with connection.cursor() as cursor:
            assert partitions(cursor, table) == {MARCH, APRIL}, kind_name
        # ... the week rollup and the working tables of the repack are gone
        assert not exists(f"{table}_week"), kind_name
        assert not exists(f"insights_{kind_name}_packed"), kind_name
        assert not exists(f"insights_{kind_name}_packed_day"), kind_name
    # ... and the database is left at the latest migrations
    assert MigrationExecutor(connection).migration_plan(executor.loader.graph.leaf_nodes()) == []
