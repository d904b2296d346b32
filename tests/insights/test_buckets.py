import datetime as dt
from zoneinfo import ZoneInfo

from insights.buckets import bucket_floor, buckets, is_boundary

BERLIN = ZoneInfo("Europe/Berlin")
UTC = dt.UTC


def local(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=BERLIN)


def test_days_follow_the_local_calendar_with_23_and_25_hour_dst_days():
    spring = list(buckets(local(2026, 3, 28), local(2026, 3, 31), "day", BERLIN))
    autumn = list(buckets(local(2026, 10, 24), local(2026, 10, 27), "day", BERLIN))

    assert [(end - start) / dt.timedelta(hours=1) for start, end in spring] == [24, 23, 24]
    assert [(end - start) / dt.timedelta(hours=1) for start, end in autumn] == [24, 25, 24]
    assert spring[1][0] == dt.datetime(2026, 3, 28, 23, tzinfo=UTC)


def test_hour_buckets_are_utc_hours_so_the_repeated_autumn_hour_stays_two_buckets():
    hours = list(buckets(local(2026, 10, 25), local(2026, 10, 26), "hour", BERLIN))

    assert len(hours) == 25
    assert len({start for start, _ in hours}) == 25


def test_weeks_start_on_monday_and_months_on_the_first():
    assert bucket_floor(local(2026, 3, 29, 15), "week", BERLIN) == local(2026, 3, 23)
    assert bucket_floor(local(2026, 3, 29, 15), "month", BERLIN) == local(2026, 3, 1)
    months = list(buckets(local(2026, 1, 1), local(2026, 4, 1), "month", BERLIN))
    assert [start.astimezone(BERLIN).date() for start, _ in months] == [dt.date(2026, m, 1) for m in (1, 2, 3)]


def test_boundaries_are_judged_in_the_local_zone():
    assert is_boundary(local(2026, 3, 23), "week", BERLIN)
    assert not is_boundary(local(2026, 3, 24), "week", BERLIN)
    assert is_boundary(dt.datetime(2026, 3, 28, 23, tzinfo=UTC), "day", BERLIN)
    assert not is_boundary(dt.datetime(2026, 3, 29, 0, tzinfo=UTC), "day", BERLIN)
    assert not is_boundary(local(2026, 3, 29, 10, 30), "hour", BERLIN)
