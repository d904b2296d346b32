"""Monthly partitions of the hourly tables (the loaded aggregates and their releases)."""

import datetime as dt


def partitions(cursor, table: str) -> set[dt.date]:
    """The UTC months that have a partition of the table."""
    cursor.execute(
        "SELECT child.relname FROM pg_inherits JOIN pg_class child ON child.oid = pg_inherits.inhrelid"
        " WHERE pg_inherits.inhparent = %s::regclass",
        [table],
    )
    prefix = f"{table}_p"
    return {dt.datetime.strptime(name.removeprefix(prefix), "%Y%m").date() for (name,) in cursor.fetchall()}


def partition(table: str, month: dt.date) -> str:
    return f"{table}_p{month:%Y%m}"


def attach(cursor, table: str, month: dt.date) -> None:
    cursor.execute(
        f"ALTER TABLE {table} ATTACH PARTITION {partition(table, month)} FOR VALUES FROM (%s) TO (%s)",
        [month_start(month), month_start(next_month(month))],
    )


def attach_days(cursor, table: str, month: dt.date) -> None:
    """attach() for a table partitioned by a date column."""
    cursor.execute(
        f"ALTER TABLE {table} ATTACH PARTITION {partition(table, month)} FOR VALUES FROM (%s) TO (%s)",
        [month, next_month(month)],
    )


def month_start(month: dt.date) -> dt.datetime:
    return dt.datetime(month.year, month.month, 1, tzinfo=dt.UTC)


def next_month(month: dt.date) -> dt.date:
    return dt.date(month.year + month.month // 12, month.month % 12 + 1, 1)


def months(start: dt.datetime, end: dt.datetime) -> list[dt.date]:
    """The UTC months that [start, end) touches."""
    month, found = dt.date(start.year, start.month, 1), []
    while month_start(month) < end:
        found.append(month)
        month = next_month(month)
    return found
