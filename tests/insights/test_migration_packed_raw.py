"""Migration 0011 packs the loaded (raw) values, a row per value before, into a row per place,
UTC day and segment; the view of the old table's name gives back every value. Its reverse puts
the rows back. It all happens in the test's transaction, which PostgreSQL rolls back with the
DDL: later tests see the database as migrated."""

import datetime as dt

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from insights.kinds import KINDS

UTC = dt.UTC
BEFORE = ("insights", "0010_packed_releases")
CELL, OTHER_CELL = 2_870_004_512, 2_870_004_513
MARCH_31_LATE = dt.datetime(2026, 3, 31, 23, tzinfo=UTC)
# (place, hour, *segment codes, value, version)
RAW = {
    "presence": [
        (CELL, dt.datetime(2026, 3, 29, 0, tzinfo=UTC), 0, 0, 412, 1),
        (CELL, dt.datetime(2026, 3, 29, 5, tzinfo=UTC), 0, 0, 7, 1),
        (CELL, dt.datetime(2026, 3, 29, 5, tzinfo=UTC), 0, 2, 8, 1),
        (CELL, MARCH_31_LATE, 0, 0, 2_000_000_000, 1),
        (CELL, MARCH_31_LATE + dt.timedelta(hours=1), 0, 0, 9, 2),
        (OTHER_CELL, MARCH_31_LATE, 0, 0, 5, 2),
    ],
    "dwell": [(CELL, MARCH_31_LATE, 3, 11, 1)],
    "home": [(CELL, MARCH_31_LATE, 0, 12, 1), (CELL, MARCH_31_LATE, 4, 6, 1)],
    "trips": [(32_767, MARCH_31_LATE, 3, 5_000_000_000, 1), (32_767, MARCH_31_LATE - dt.timedelta(hours=3), 3, 6, 1)],
}


def migrate(targets) -> None:
    MigrationExecutor(connection).migrate(targets)


def rows(kind_name: str) -> list[tuple]:
    kind = KINDS[kind_name]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {kind.key}, {kind.value}, dataset_version_id FROM {kind.table} ORDER BY 1, 2, 3")
        return cursor.fetchall()


@pytest.mark.django_db  # the test's transaction, rolled back with its DDL: see the module's docstring
def test_packing_the_loaded_values_keeps_every_value_and_its_reverse_puts_them_back():
    migrate([BEFORE])
    with connection.cursor() as cursor:
        for kind_name, values in RAW.items():
            kind = KINDS[kind_name]
            for month in ("2026-03-01", "2026-04-01"):
                after = "2026-04-01" if month.startswith("2026-03") else "2026-05-01"
                cursor.execute(
                    f"CREATE TABLE {kind.table}_p{month[:4]}{month[5:7]} PARTITION OF {kind.table}"
                    f" FOR VALUES FROM ('{month} 00:00+00') TO ('{after} 00:00+00')"
                )
            placeholders = ", ".join(["%s"] * len(values[0]))
            cursor.executemany(
                f"INSERT INTO {kind.table} ({kind.key}, {kind.value}, dataset_version_id) VALUES ({placeholders})",
                values,
            )

    migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())

    for kind_name, values in RAW.items():
        assert rows(kind_name) == sorted(values), kind_name
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT cell_id, day, gender, hours, counts, dataset_version_id FROM insights_presence_raw"
            " ORDER BY 1, 2, 3, 6"
        )
        assert cursor.fetchall() == [
            (CELL, dt.date(2026, 3, 29), 0, [0, 5], [412, 7], 1),
            (CELL, dt.date(2026, 3, 29), 2, [5], [8], 1),
            (CELL, dt.date(2026, 3, 31), 0, [23], [2_000_000_000], 1),
            (CELL, dt.date(2026, 4, 1), 0, [0], [9], 2),
            (OTHER_CELL, dt.date(2026, 3, 31), 0, [23], [5], 2),
        ]
        cursor.execute("SELECT relname FROM pg_class WHERE relname LIKE 'insights_presence_raw_p%' ORDER BY 1")
        assert cursor.fetchall() == [("insights_presence_raw_p202603",), ("insights_presence_raw_p202604",)]

    migrate([BEFORE])

    for kind_name, values in RAW.items():
        assert rows(kind_name) == sorted(values), kind_name
