"""The released tables packed (insights/packing.py): a row per place, UTC month and segment
holds the month's published hours as a bitmap and their values as 4-byte integers, instead of
a row per value (about 100 bytes each with the key). The day rollup packs a local month's
days the same way; the week rollup goes (weeks are summed from days).

Existing releases are repacked from the old tables, month by month, so no release needs
rebuilding. Views insights_<kind>_released_hours and _days show the packed rows as one row per
value, as the old tables did: for tests, audits and exports, never for reports."""

from django.db import migrations

# kind: (place column and type, segment columns and types, value column)
KINDS = {
    "presence": ("cell_id bigint", "age_band smallint, gender smallint", "visits"),
    "dwell": ("cell_id bigint", "dwell_band smallint", "visitors"),
    "home": ("cell_id bigint", "home_region smallint", "visitors"),
    "trips": ("origin_id smallint", "destination smallint", "trips"),
}
HOURS = 744
BITMAP = f"substring(varbit_send(bit_or(B'1'::bit({HOURS}) >> (extract(epoch FROM hour - %(month)s) / 3600)::int)) FROM 5)"
VALUES = "string_agg(int4send(value::int4), ''::bytea ORDER BY hour)"
DAYS = "string_agg(set_byte('\\x00'::bytea, 0, extract(day FROM day)::int - 1), ''::bytea ORDER BY day)"
SUMS = "string_agg(int8send(value::int8), ''::bytea ORDER BY day)"
DAY_HOURS = "string_agg(set_byte('\\x00'::bytea, 0, hours::int), ''::bytea ORDER BY day)"


def names(columns: str) -> list[str]:
    return [column.split()[0] for column in columns.split(", ")]


def months_of(cursor, table: str) -> list[str]:
    cursor.execute(
        "SELECT child.relname FROM pg_inherits JOIN pg_class child ON child.oid = pg_inherits.inhrelid"
        " WHERE pg_inherits.inhparent = %s::regclass ORDER BY 1",
        [table],
    )
    return [name.removeprefix(f"{table}_p") for (name,) in cursor.fetchall()]


def pack(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        for kind, (place_column, segment_columns, value) in KINDS.items():
            place, segments = place_column.split()[0], ", ".join(names(segment_columns))
            key = f"{place}, month, {segments}, policy_id, dataset_version_id"
            old, new = f"insights_{kind}_released", f"insights_{kind}_packed"
            cursor.execute(
                f"CREATE TABLE {new} (month timestamptz NOT NULL, {place_column} NOT NULL, {segment_columns} NOT NULL,"
                " dataset_version_id integer NOT NULL, policy_id integer NOT NULL,"
                " published_hours bytea NOT NULL, published_values bytea NOT NULL,"
                f" PRIMARY KEY ({key})) PARTITION BY RANGE (month)"
            )
            months = months_of(cursor, old)
            for month in months:
                start = f"{month[:4]}-{month[4:]}-01 00:00+00"
                part = f"{new}_p{month}"
                # Rows up to 3 kB stay inline and uncompressed: read without detoasting.
                cursor.execute(
                    f"CREATE TABLE {part} (LIKE {new} INCLUDING CONSTRAINTS) WITH (toast_tuple_target = 8160)"
                )
                cursor.execute(
                    f"INSERT INTO {part} SELECT %(month)s, {place}, {segments}, dataset_version_id, policy_id,"
                    f" {BITMAP}, {VALUES} FROM (SELECT *, {value} AS value FROM {old}_p{month}) r"
                    f" GROUP BY {place}, {segments}, policy_id, dataset_version_id ORDER BY {place}, {segments}",
                    {"month": start},
                )
                cursor.execute(f"ALTER TABLE {part} ADD PRIMARY KEY ({key})")
                year, number = int(month[:4]), int(month[4:])
                following = f"{year + number // 12}-{number % 12 + 1:02d}-01 00:00+00"
                cursor.execute(
                    f"ALTER TABLE {new} ATTACH PARTITION {part} FOR VALUES FROM (%s) TO (%s)", [start, following]
                )
            cursor.execute(
                f"CREATE TABLE {new}_day ({place_column} NOT NULL, month date NOT NULL, {segment_columns} NOT NULL,"
                " dataset_version_id integer NOT NULL, policy_id integer NOT NULL,"
                " days bytea NOT NULL, day_sums bytea NOT NULL, day_hours bytea NOT NULL,"
                f" PRIMARY KEY ({key}))"
            )
            cursor.execute(
                f"INSERT INTO {new}_day SELECT {place}, date_trunc('month', day)::date, {segments},"
                f" dataset_version_id, policy_id, {DAYS}, {SUMS}, {DAY_HOURS}"
                f" FROM (SELECT *, {value} AS value FROM {old}_day) r"
                f" GROUP BY {place}, 2, {segments}, policy_id, dataset_version_id ORDER BY {place}, 2, {segments}"
            )
            for suffix in ("", "_day", "_week"):
                cursor.execute(f"DROP TABLE {old}{suffix}")
            cursor.execute(f"ALTER TABLE {new} RENAME TO {old}")
            for month in months:
                cursor.execute(f"ALTER TABLE {new}_p{month} RENAME TO {old}_p{month}")
            cursor.execute(f"ALTER TABLE {new}_day RENAME TO {old}_day")
            views(cursor, kind, place, segments, value)


def views(cursor, kind: str, place: str, segments: str, value: str) -> None:
    table = f"insights_{kind}_released"
    cursor.execute(
        f"CREATE VIEW {table}_hours AS SELECT t.{place}, t.month + make_interval(hours => v.hour) AS hour,"
        f" {', '.join(f't.{name}' for name in segments.split(', '))},"
        f" ('x' || encode(substring(t.published_values FROM 4 * v.n + 1 FOR 4), 'hex'))::bit(32)::int::bigint"
        f" AS {value}, t.dataset_version_id, t.policy_id"
        f" FROM {table} t CROSS JOIN LATERAL ("
        f"  SELECT h AS hour, (row_number() OVER (ORDER BY h) - 1)::int AS n FROM generate_series(0, {HOURS - 1}) h"
        f"  WHERE get_bit(t.published_hours, h - h % 8 + 7 - h % 8) = 1) v"
    )
    cursor.execute(
        f"CREATE VIEW {table}_days AS SELECT t.{place}, t.month + get_byte(t.days, v.n) AS day,"
        f" {', '.join(f't.{name}' for name in segments.split(', '))},"
        f" ('x' || encode(substring(t.day_sums FROM 8 * v.n + 1 FOR 8), 'hex'))::bit(64)::bigint AS {value},"
        f" get_byte(t.day_hours, v.n) AS hours, t.dataset_version_id, t.policy_id"
        f" FROM {table}_day t CROSS JOIN LATERAL generate_series(0, length(t.days) - 1) v(n)"
    )


class Migration(migrations.Migration):
    dependencies = [
        ("insights", "0009_coverage"),
    ]

    operations = [migrations.RunPython(pack, elidable=False)]  # irreversible: the old rows are gone
