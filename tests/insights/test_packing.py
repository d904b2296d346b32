"""The packed rows' decoders (insights/packing.py) agree with each other and refuse a row whose
values do not match its hours or days."""

import numpy as np
import pytest

from insights.packing import (
    DAY_SUM,
    HOURLY_VALUE,
    HOURS_PER_ROW,
    daily_rows,
    daily_values,
    hourly_rows,
    hourly_values,
)


def packed_hours(values: dict[int, int]) -> tuple[bytes, bytes]:
    """A row's bitmap and values: {hour of the month: value}."""
    bits = np.zeros(HOURS_PER_ROW, dtype=np.uint8)
    bits[list(values)] = 1
    return np.packbits(bits).tobytes(), np.array([values[hour] for hour in sorted(values)], HOURLY_VALUE).tobytes()


def packed_days(sums: dict[int, tuple[int, int]]) -> tuple[bytes, bytes, bytes]:
    """A row's days, sums and hours: {day of the month from 0: (sum, hours)}."""
    days = sorted(sums)
    return (
        bytes(days),
        np.array([sums[day][0] for day in days], DAY_SUM).tobytes(),
        bytes(sums[day][1] for day in days),
    )


HOURS = [{0: 7, 5: 12, 743: 2**31 - 1}, {}, {100: 5, 101: 6}]
DAYS = [{0: (70, 10), 30: (2**40, 24)}, {3: (5, 1)}, {}]


def test_hourly_rows_put_each_value_at_its_hour_and_count_it_once():
    bitmaps, values = zip(*(packed_hours(row) for row in HOURS), strict=True)

    matrix, published = hourly_rows(list(bitmaps), list(values))

    assert matrix.shape == published.shape == (3, HOURS_PER_ROW)
    for row, expected in enumerate(HOURS):
        assert {int(hour): int(matrix[row, hour]) for hour in np.flatnonzero(matrix[row])} == expected
        assert set(np.flatnonzero(published[row])) == set(expected)
    rows, hours, numbers = hourly_values(list(bitmaps), list(values))
    assert np.array_equal(matrix[rows, hours], numbers)


def test_daily_rows_put_each_sum_and_its_hours_at_its_day():
    days, sums, hours = (list(column) for column in zip(*(packed_days(row) for row in DAYS), strict=True))

    matrix, counts = daily_rows(days, sums, hours)

    assert matrix.shape == counts.shape == (3, 31)
    for row, expected in enumerate(DAYS):
        found = {int(day): (int(matrix[row, day]), int(counts[row, day])) for day in np.flatnonzero(counts[row])}
        assert found == expected
    rows, offsets, totals, published = daily_values(days, sums, hours)
    assert np.array_equal(matrix[rows, offsets], totals) and np.array_equal(counts[rows, offsets], published)


def test_a_row_whose_values_do_not_match_its_hours_or_days_is_refused():
    bitmap, values = packed_hours({1: 5, 2: 6})
    with pytest.raises(ValueError, match="bitmap"):
        hourly_rows([bitmap], [values[:-4]])
    days, sums, hours = packed_days({1: (5, 1), 2: (6, 1)})
    with pytest.raises(ValueError, match="days"):
        daily_rows([days], [sums], [hours[:1]])
