import datetime as dt

from django.db import migrations

# The loaded (exact) values, a row per value before, are packed: a row per place, UTC day and
# segment of a dataset version, the day's hours and counts as arrays (insights/loaded.py). The
# table of the same name becomes a view that unpacks them, so that what reads it (the release
# build, the models) reads what it read before.
KINDS = {
    # table: (place column, its type, segment columns, value column, its type)
    "insights_presence": ("cell_id", "bigint", ("age_band", "gender"), "visits", "integer"),
    "insights_dwell": ("cell_id", "bigint", ("dwell_band",), "visitors", "integer"),
    "insights_home": ("cell_id", "bigint", ("home_region",), "visitors", "integer"),
    "insights_trips": ("origin_id", "smallint", ("destination",), "trips", "bigint"),
}


def _month_bounds(month: str) -> tuple[dt.date, dt.date]:
    """The first day of the month named YYYYMM, and of the next."""
    first = dt.date(int(month[:4]), int(month[4:]), 1)
    return first, dt.date(first.year + first.month // 12, first.month % 12 + 1, 1)


def _view(table, place, segments, value) -> str:
    columns = ", ".join(f"r.{name}" for name in segments)
    return (
        f"CREATE VIEW {table} AS SELECT r.{place},"
        # Seconds since the epoch: no time zone looked up per value.
        " to_timestamp(((r.day - date '1970-01-01') * 24 + v.hour)::float8 * 3600) AS hour,"
        f" {columns}, v.count AS {value}, r.dataset_version_id, r.day"
        f" FROM {table}_raw r CROSS JOIN LATERAL unnest(r.hours, r.counts) AS v(hour, count)"
    )


def pack(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        for table, (place, place_type, segments, value, value_type) in KINDS.items():
            segment_columns = ", ".join(f"{name} smallint NOT NULL" for name in segments)
            cursor.execute(
                f"CREATE TABLE {table}_raw ({place} {place_type} NOT NULL, day date NOT NULL, {segment_columns},"
                f" dataset_version_id bigint NOT NULL, hours smallint[] NOT NULL, counts {value_type}[] NOT NULL)"
                " PARTITION BY RANGE (day)"
            )
            cursor.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = %s::regclass",
                [table],
            )
            for (old_partition,) in cursor.fetchall():
                month = old_partition.removeprefix(f"{table}_p")
                first, after = _month_bounds(month)
                new_partition = f"{table}_raw_p{month}"
                cursor.execute(
                    f"CREATE TABLE {new_partition} PARTITION OF {table}_raw FOR VALUES FROM ('{first}') TO ('{after}')"
                )
                keys = ", ".join([place, "day", *segments, "dataset_version_id"])
                cursor.execute(
                    f"INSERT INTO {new_partition} ({keys}, hours, counts)"
                    f" SELECT {keys}, array_agg(hour_of_day ORDER BY hour), array_agg({value} ORDER BY hour)"
                    f" FROM (SELECT *, (hour AT TIME ZONE 'UTC')::date AS day,"
                    f"        extract(hour FROM hour AT TIME ZONE 'UTC')::smallint AS hour_of_day"
                    f"       FROM {old_partition}) old GROUP BY {keys}"
                )
            cursor.execute(f"DROP TABLE {table}")
            cursor.execute(_view(table, place, segments, value))


def unpack(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        for table, (place, place_type, segments, value, value_type) in KINDS.items():
            cursor.execute(f"ALTER VIEW {table} RENAME TO {table}_unpacked")
            segment_columns = ", ".join(f"{name} smallint NOT NULL" for name in segments)
            cursor.execute(
                f"CREATE TABLE {table} ({place} {place_type} NOT NULL, hour timestamptz NOT NULL, {segment_columns},"
                f" {value} {value_type} NOT NULL, dataset_version_id bigint NOT NULL,"
                f" PRIMARY KEY ({place}, hour, {', '.join(segments)})) PARTITION BY RANGE (hour)"
            )
            cursor.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = %s::regclass",
                [f"{table}_raw"],
            )
            for (packed_partition,) in cursor.fetchall():
                first, after = _month_bounds(packed_partition.removeprefix(f"{table}_raw_p"))
                cursor.execute(
                    f"CREATE TABLE {table}_p{first:%Y%m} PARTITION OF {table}"
                    f" FOR VALUES FROM ('{first} 00:00+00') TO ('{after} 00:00+00')"
                )
            columns = ", ".join([place, "hour", *segments, value, "dataset_version_id"])
            cursor.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {table}_unpacked")
            cursor.execute(f"DROP VIEW {table}_unpacked")
            cursor.execute(f"DROP TABLE {table}_raw")


class Migration(migrations.Migration):
    dependencies = [("insights", "0010_packed_releases")]

    operations = [migrations.RunPython(pack, unpack)]
