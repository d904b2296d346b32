import datetime as dt
from zoneinfo import ZoneInfo

from django.core.management import call_command
from django.db import connection

from insights.models import DatasetVersion, Release, RetentionMark
from insights.selectors import presence_coverage
from insights.services import aggregates_retain
from tests import grid
from tests.insights.conftest import published, released_partitions

UTC = dt.UTC
BERLIN = ZoneInfo("Europe/Berlin")


def months_loaded() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'insights_presence_raw'::regclass ORDER BY 1"
        )
        return [name.removeprefix("insights_presence_raw_p") for (name,) in cursor.fetchall()]


def load_february_to_april(tmp_path):
    start, end = dt.datetime(2026, 2, 20, tzinfo=UTC), dt.datetime(2026, 4, 10, tzinfo=UTC)
    # 17 an hour: every value released
    grid.load_totals(tmp_path / "spring.csv", cells=[(0, 0)], start=start, end=end, visits=lambda c, h: 17)


def test_whole_months_before_the_cut_are_dropped_with_their_release_and_its_rollups(db, tmp_path):
    load_february_to_april(tmp_path)
    assert released_partitions("presence") == ["202602", "202603", "202604"]

    summary = aggregates_retain(before=dt.datetime(2026, 4, 5, tzinfo=UTC))["presence"]

    assert summary.dropped_months == [dt.date(2026, 2, 1), dt.date(2026, 3, 1)]
    assert summary.retained_from == dt.datetime(2026, 4, 1, tzinfo=UTC)
    assert months_loaded() == ["202604"]
    assert released_partitions("presence") == ["202604"]
    assert min(hour for _, hour, _, _ in published("presence")) == dt.datetime(2026, 4, 1, tzinfo=UTC)
    # 1 April in Berlin began at 22:00 UTC on 31 March, so it held dropped hours too.
    assert min(day for _, day, _, _ in published("presence", period="day")) == dt.date(2026, 4, 2)
    assert presence_coverage().start == dt.datetime(2026, 4, 1, tzinfo=UTC)
    assert DatasetVersion.objects.count() == Release.objects.count() == 1  # versions and releases are history


def test_nothing_is_dropped_when_no_month_has_ended_before_the_cut(db, tmp_path):
    load_february_to_april(tmp_path)

    summary = aggregates_retain(before=dt.datetime(2026, 2, 28, tzinfo=UTC))["presence"]

    assert summary.dropped_months == []
    assert months_loaded() == released_partitions("presence") == ["202602", "202603", "202604"]
    assert not RetentionMark.objects.exists()


def test_the_command_drops_by_date_and_says_what_is_left(db, tmp_path, capsys):
    load_february_to_april(tmp_path)

    call_command("drop_old_data", before=dt.date(2026, 3, 1))

    assert capsys.readouterr().out.splitlines() == [
        "presence: dropped 2026-02; data now starts 2026-03-01 00:00Z",
        "dwell: nothing ends before 2026-03-01 00:00Z; nothing dropped",
        "home: nothing ends before 2026-03-01 00:00Z; nothing dropped",
        "trips: nothing ends before 2026-03-01 00:00Z; nothing dropped",
    ]
    assert months_loaded() == released_partitions("presence") == ["202603", "202604"]
