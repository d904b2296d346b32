"""The packed layout of the released tables: what their rows hold and how they are read.

A row of insights_<kind>_released holds one place's published values of one segment for one
UTC month (of one dataset version and release policy):

- published: a bitmap of the month's hours, 744 bits (93 bytes), the first hour in the most
  significant bit of the first byte; a bit is set where that hour's value was published;
- values: the published values, in hour order, as 4-byte big-endian integers.

A row of insights_<kind>_released_day holds one place's published day sums of one segment for
one local month of ROLLUP_TIME_ZONE:

- days: a byte per day with a published hour, the day of the month minus one, in order;
- sums: the day's published values summed, 8-byte big-endian, one per day;
- hours: a byte per day, how many of its hours were published.

A published value is at least k (2 or more), so a value is never 0 and the bitmap alone says
what was published. Rows are read as bytes and decoded here with numpy: no Python object per
place-hour.
"""

import numpy as np

HOURS_PER_ROW = 744  # the longest UTC month, 31 days
BITMAP_BYTES = HOURS_PER_ROW // 8
DAYS_PER_ROW = 31  # the longest month
HOURLY_VALUE = np.dtype(">i4")
DAY_SUM = np.dtype(">i8")

# SQL over the published values of one month (columns hour and value): the row's bitmap and values.
PACKED_HOURS_SQL = (
    f"substring(varbit_send(bit_or(B'1'::bit({HOURS_PER_ROW})"
    " >> (extract(epoch FROM hour - %(month)s) / 3600)::int)) FROM 5)"
)
PACKED_VALUES_SQL = "string_agg(int4send(value::int4), ''::bytea ORDER BY hour)"
# SQL over the day sums of one local month (columns day, value, hours).
PACKED_DAYS_SQL = "string_agg(set_byte('\\x00'::bytea, 0, extract(day FROM day)::int - 1), ''::bytea ORDER BY day)"
PACKED_SUMS_SQL = "string_agg(int8send(value::int8), ''::bytea ORDER BY day)"
PACKED_DAY_HOURS_SQL = "string_agg(set_byte('\\x00'::bytea, 0, hours::int), ''::bytea ORDER BY day)"

SEGMENT_BITS = 16  # a segment code is a smallint


def segment_key_sql(columns) -> str:
    """SQL of a packed row's segment columns (over t.) as one int8, as insights.held.segment_key
    makes it from their codes."""
    return " + ".join(f"(t.{name}::int8 << {SEGMENT_BITS * position})" for position, name in enumerate(columns))


def hourly_values(bitmaps: list[bytes], values: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every published value of the rows: (row index, hour of the month, value), in row and hour
    order. bitmaps and values: the rows' columns, each item one row's or several rows' joined."""
    joined = b"".join(bitmaps)
    bits = np.unpackbits(np.frombuffer(joined, np.uint8).reshape(len(joined) // BITMAP_BYTES, BITMAP_BYTES), axis=1)
    rows, hours = np.nonzero(bits)
    numbers = np.frombuffer(b"".join(values), HOURLY_VALUE).astype(np.int64)
    if len(numbers) != len(rows):
        raise ValueError("a packed row's values do not match its bitmap")
    return rows, hours, numbers


def daily_values(
    days: list[bytes], sums: list[bytes], hours: list[bytes]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every published day of the rows: (row index, day of the month from 0, sum, published hours)."""
    lengths = np.fromiter(map(len, days), np.int64, len(days))
    rows = np.repeat(np.arange(len(lengths)), lengths)
    offsets = np.frombuffer(b"".join(days), np.uint8).astype(np.int64)
    totals = np.frombuffer(b"".join(sums), DAY_SUM).astype(np.int64)
    counts = np.frombuffer(b"".join(hours), np.uint8).astype(np.int64)
    if not len(rows) == len(offsets) == len(totals) == len(counts):
        raise ValueError("a packed day row's sums do not match its days")
    return rows, offsets, totals, counts


def hourly_rows(bitmaps: list[bytes], values: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """The rows' values as a (rows, 744 hours) int32 matrix, 0 where nothing was published, and
    how many hours each position sums (uint8, 1 where published): each row decoded in place, no
    index per value."""
    joined = np.frombuffer(b"".join(bitmaps), np.uint8)
    published = np.unpackbits(joined.reshape(len(joined) // BITMAP_BYTES, BITMAP_BYTES), axis=1)
    numbers = np.frombuffer(b"".join(values), HOURLY_VALUE)
    if len(numbers) != np.count_nonzero(published):
        raise ValueError("a packed row's values do not match its bitmap")
    matrix = np.zeros(published.shape, dtype=np.int32)
    matrix[published.view(bool)] = numbers  # row by row, hour by hour: the order they are packed in
    return matrix, published


def daily_rows(days: list[bytes], sums: list[bytes], hours: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """The rows' day sums as a (rows, 31 days) int64 matrix, 0 where nothing was published, and
    the hours each day sums (uint8)."""
    lengths = np.fromiter(map(len, days), np.int64, len(days))
    offsets = np.frombuffer(b"".join(days), np.uint8)
    totals = np.frombuffer(b"".join(sums), DAY_SUM)
    counts = np.frombuffer(b"".join(hours), np.uint8)
    if not len(offsets) == len(totals) == len(counts):
        raise ValueError("a packed day row's sums do not match its days")
    at = np.repeat(np.arange(len(days)) * DAYS_PER_ROW, lengths) + offsets
    matrix = np.zeros((len(days), DAYS_PER_ROW), dtype=np.int64)
    published = np.zeros((len(days), DAYS_PER_ROW), dtype=np.uint8)
    matrix.reshape(-1)[at], published.reshape(-1)[at] = totals, counts  # views: faster than .flat
    return matrix, published


def versions_added(keys: tuple[np.ndarray, ...], values: np.ndarray, counts: np.ndarray) -> tuple:
    """Rows sorted by their keys with a row per key: consecutive rows of the same keys (a place's
    segment in several dataset versions) added into one. Returns (keys, values, counts)."""
    if not len(keys[0]):
        return keys, values, counts
    starts = np.flatnonzero(key_changes(*keys))
    if len(starts) == len(keys[0]):
        return keys, values, counts
    values = np.add.reduceat(values, starts, axis=0, dtype=values.dtype)  # reduceat would widen them
    counts = np.add.reduceat(counts, starts, axis=0, dtype=counts.dtype)
    return tuple(key[starts] for key in keys), values, counts


def key_changes(*keys: np.ndarray) -> np.ndarray:
    """Where sorted rows' keys change: True at each row whose key differs from the one before."""
    changed = np.zeros(len(keys[0]), dtype=bool)
    changed[0] = True
    for key in keys:
        changed[1:] |= key[1:] != key[:-1]
    return changed
