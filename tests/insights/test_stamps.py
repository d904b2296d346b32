"""Bucket boundaries are formatted as arrays (insights/stamps.py): the text must be what
datetime.isoformat() writes for every instant, in zones with DST, half-hour offsets, a
half-hour DST shift and offsets with seconds, across every change of offset."""

import datetime as dt
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from insights.buckets import buckets
from insights.stamps import bucket_stamps

ZONES = [
    "Europe/Berlin",
    "UTC",
    "America/New_York",
    "Asia/Kolkata",  # +05:30
    "Australia/Lord_Howe",  # +10:30, and +11:00 in summer: a DST shift of half an hour
    "Pacific/Chatham",  # +12:45 / +13:45
    "Europe/Amsterdam",  # +00:19:32 before 1937: an offset with seconds
]


@hypothesis_settings(max_examples=200, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    granularity=st.sampled_from(["hour", "day", "week", "month"]),
    start=st.datetimes(min_value=dt.datetime(1930, 1, 1), max_value=dt.datetime(2037, 1, 1)),
    days=st.integers(1, 400),
)
def test_the_text_of_every_boundary_is_its_isoformat(zone, granularity, start, days):
    tz = ZoneInfo(zone)
    start = start.replace(tzinfo=dt.UTC)
    periods = list(buckets(start, start + dt.timedelta(days=days), granularity, tz))
    stamps = bucket_stamps([bucket_start for bucket_start, _ in periods], periods[-1][1], tz)

    expected = [boundary.astimezone(tz).isoformat() for boundary in [periods[0][0], *(end for _, end in periods)]]
    assert stamps.text.to_pylist() == expected
    assert stamps.hours.tolist() == [int((end - begin) / dt.timedelta(hours=1)) for begin, end in periods]
