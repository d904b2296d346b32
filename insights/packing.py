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
    days: list[bytes], sums: list[bytes], hours: list[bytes], *, lengths: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every published day of the rows: (row index, day of the month from 0, sum, published
    hours). lengths: each row's days, where an item of the columns joins several rows'."""
    if lengths is None:
        lengths = np.fromiter(map(len, days), np.int64, len(days))
    rows = np.repeat(np.arange(len(lengths)), lengths)
    offsets = np.frombuffer(b"".join(days), np.uint8).astype(np.int64)
    totals = np.frombuffer(b"".join(sums), DAY_SUM).astype(np.int64)
    counts = np.frombuffer(b"".join(hours), np.uint8).astype(np.int64)
    if not len(rows) == len(offsets) == len(totals) == len(counts):
        raise ValueError("a packed day row's sums do not match its days")
    return rows, offsets, totals, counts
