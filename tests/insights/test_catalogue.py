"""The releases' state and the catalogue, which every worker reads again after each release
(insights/catalogue.py): prepared once a session, and still prepared after a transaction that
is rolled back; a worker that listens for changes asks nothing until one is committed, and then
reads it; inside a transaction, the state is asked at every look."""

import datetime as dt
import importlib
import re
import time

import psycopg
import pytest
from django.db import connection, transaction

import insights.catalogue
from insights.catalogue import Catalogue, catalogue, forget, listen_in_background, release_state, stop_listening

notified = importlib.import_module("insights.migrations.0014_catalogue_changes_notified")


def prepared() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM pg_prepared_statements WHERE name LIKE 'footfall_%' ORDER BY name")
        return [name for (name,) in cursor.fetchall()]


def test_the_releases_state_and_catalogue_are_prepared_once_a_session_and_outlive_a_rollback(city):
    with transaction.atomic():
        first = release_state()
        forget()
        seen = catalogue()
        transaction.set_rollback(True)

    assert prepared() == ["footfall_catalogue", "footfall_release_state"]
    assert [release_state() for _ in range(3)] == [first] * 3
    forget()
    assert catalogue() == seen
    assert prepared() == ["footfall_catalogue", "footfall_release_state"]
    assert catalogue().state == first  # the full read's state is the same, so the catalogue is kept


def statements_asked(monkeypatch) -> list[str]:
    """The names of the catalogue's statements run from here on."""
    asked = []
    run = insights.catalogue._prepared

    def counted(name, sql):
        asked.append(name)
        return run(name, sql)

    monkeypatch.setattr(insights.catalogue, "_prepared", counted)
    return asked


def committed_elsewhere(sql: str) -> None:
    """A change another process commits (a release build, a regions load); then a statement of
    this session's, as a worker claims a report before it looks at the catalogue: PostgreSQL
    sends the notice of a change committed before a statement ahead of its answer."""
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as other:
        other.execute(sql)
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


REGIONS_MOVED = (
    "INSERT INTO insights_regionchanges (id, mark) VALUES (1, 42) ON CONFLICT (id) DO UPDATE SET mark = excluded.mark"
)


@pytest.mark.django_db(transaction=True)
def test_a_listening_worker_asks_nothing_until_a_change_is_committed_and_then_reads_it(monkeypatch):
    forget()
    first = catalogue()
    asked = statements_asked(monkeypatch)
    assert [catalogue() for _ in range(3)] == [first] * 3
    assert asked == []

    committed_elsewhere(REGIONS_MOVED)
    assert catalogue().regions_mark == 42
    assert asked == ["footfall_release_state", "footfall_catalogue"]
    assert catalogue().regions_mark == 42
    assert len(asked) == 2


@pytest.mark.django_db(transaction=True)
def test_a_new_session_listens_again(monkeypatch):
    forget()
    first = catalogue()
    connection.close()
    asked = statements_asked(monkeypatch)
    assert catalogue() == first
    assert asked == ["footfall_release_state"]  # not yet listening: the state is asked once
    committed_elsewhere(REGIONS_MOVED)
    assert catalogue().regions_mark == 42


def test_inside_a_transaction_every_look_asks_the_state(db, monkeypatch):
    forget()
    catalogue()
    asked = statements_asked(monkeypatch)
    catalogue()
    with connection.cursor() as cursor:  # this transaction's own change, notified only at its commit
        cursor.execute(REGIONS_MOVED)
    assert catalogue().regions_mark == 42
    assert asked == ["footfall_release_state", "footfall_release_state", "footfall_catalogue"]


@pytest.mark.django_db(transaction=True)
def test_with_listening_off_every_look_asks_the_state(settings, monkeypatch):
    settings.CATALOGUE_LISTEN = False
    forget()
    first = catalogue()
    asked = statements_asked(monkeypatch)
    assert [catalogue() for _ in range(2)] == [first] * 2
    assert asked == ["footfall_release_state"] * 2


def test_every_table_the_state_is_read_from_notifies_a_change(db):
    read_from = set(re.findall(r"FROM (insights_\w+)", insights.catalogue._STATE_COLUMNS))
    assert read_from == set(insights.catalogue._NOTIFYING_TABLES) == set(notified.TABLES)
    assert f"pg_notify('{insights.catalogue.CHANNEL}'" in notified.NOTIFY_SQL
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tgrelid::regclass::text, tgenabled FROM pg_trigger WHERE tgname = 'insights_catalogue_changed'"
        )
        assert sorted(cursor.fetchall()) == sorted((table, "A") for table in read_from)  # also for replicas


@pytest.mark.django_db(transaction=True)
def test_with_a_trigger_disabled_every_look_asks_the_state(monkeypatch):
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE insights_release DISABLE TRIGGER insights_catalogue_changed")
    try:
        connection.close()
        forget()
        first = catalogue()
        asked = statements_asked(monkeypatch)
        assert [catalogue() for _ in range(2)] == [first] * 2
        assert asked == ["footfall_release_state"] * 2
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE insights_release ENABLE ALWAYS TRIGGER insights_catalogue_changed")


@pytest.mark.django_db(transaction=True)
def test_silence_is_trusted_for_a_while_only(monkeypatch):
    forget()
    first = catalogue()
    monkeypatch.setattr(insights.catalogue, "TRUSTED_SECONDS", 0.0)
    asked = statements_asked(monkeypatch)
    assert catalogue() == first
    assert asked == ["footfall_release_state"]


def notices_heard() -> list[str]:
    """The names of the notices this session heard, after a statement of its own."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return [notice.payload for notice in connection.connection.notifies(timeout=0)]


@pytest.mark.django_db(transaction=True)
def test_each_commit_notifies_once_under_a_name_of_its_own():
    catalogue()  # the session listens
    notices_heard()
    committed_elsewhere(REGIONS_MOVED)
    committed_elsewhere(REGIONS_MOVED)
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as other:
        with other.transaction():  # two tables changed in one transaction: one notice
            other.execute(REGIONS_MOVED)
            other.execute("UPDATE insights_release SET built_at = built_at WHERE false")
    heard = notices_heard()
    assert len(heard) == 3 == len(set(heard))
    assert all(re.fullmatch(r"\d+@[\d.]+", name) for name in heard)


def awaited(condition, seconds: float = 10.0) -> None:
    waited = time.monotonic()
    while not condition():
        assert time.monotonic() - waited < seconds, "not within 10 s"
        time.sleep(0.005)


def regions_mark_read(mark: int) -> bool:
    with insights.catalogue._lock:
        return bool(insights.catalogue._seen) and insights.catalogue._seen[0].regions_mark == mark


@pytest.fixture
def listener():
    """This process's listener, as a report worker process starts it; its session closed after."""
    forget()
    try:
        listen_in_background()
        awaited(lambda: bool(insights.catalogue._seen))  # its first read
        yield
    finally:
        stop_listening()


@pytest.mark.django_db(transaction=True)
def test_the_listener_reads_a_committed_change_so_the_next_report_reads_nothing(listener, monkeypatch):
    first = catalogue()  # this session listens and found the catalogue current
    asked = statements_asked(monkeypatch)
    committed_elsewhere(REGIONS_MOVED)
    awaited(lambda: regions_mark_read(42))
    assert catalogue().regions_mark == 42
    assert asked == []
    assert catalogue() == insights.catalogue._seen[0] != first


@pytest.mark.django_db(transaction=True)
def test_a_change_the_listener_has_not_read_after_is_asked_about(listener, monkeypatch):
    catalogue()
    stop_listening()
    asked = statements_asked(monkeypatch)
    committed_elsewhere(REGIONS_MOVED)
    assert catalogue().regions_mark == 42
    assert asked == ["footfall_release_state", "footfall_catalogue"]


@pytest.mark.django_db(transaction=True)
def test_the_listener_listens_again_after_losing_its_session(listener, monkeypatch):
    monkeypatch.setattr(insights.catalogue, "LISTENER_RETRY_SECONDS", 0.05)
    catalogue()
    before = insights.catalogue._seen[0]
    lost = listener_sessions()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", lost)
        assert cursor.fetchone() == (True,)
    awaited(lambda: insights.catalogue._seen[0] is not before)  # read again, so listening again
    assert listener_sessions() not in ([], lost)
    asked = statements_asked(monkeypatch)
    committed_elsewhere(REGIONS_MOVED)
    awaited(lambda: regions_mark_read(42))
    assert catalogue().regions_mark == 42
    assert asked == []


def listener_sessions() -> list[int]:
    """The process ids of the listener's sessions on this database."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND datname = current_database()",
            [insights.catalogue.LISTENER_NAME],
        )
        return [pid for (pid,) in cursor.fetchall()]


@pytest.mark.django_db(transaction=True)
def test_a_read_sent_before_the_session_knew_its_catalogue_current_is_not_taken_for_current(monkeypatch):
    """Of two sessions' reads, the one sent later may hold the older snapshot (the server ran it
    first): a session takes the process's catalogue without asking only if it is the one it found
    current, or was sent after it knew that one current."""
    forget()
    found = catalogue()  # this session listens and found it current
    _, known_at = connection.catalogue_current
    older = Catalogue(state=("an older snapshot",), releases=(), retained_from={}, read_at=known_at - 1e-6)
    insights.catalogue._keep(older, heard=[])
    assert insights.catalogue._seen == [older]  # sent after the read the session found, so kept
    asked = statements_asked(monkeypatch)
    assert catalogue() == found
    assert asked == ["footfall_release_state", "footfall_catalogue"]
    assert catalogue() == found and len(asked) == 2


@pytest.mark.django_db(transaction=True)
def test_the_listener_reads_in_djangos_time_zone_whatever_the_databases(city):
    """The state's text and the keys made of build times are Django's sessions' (UTC) in the
    listener's session too, whatever time zone the database gives a new session."""
    database = connection.settings_dict["NAME"]
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER DATABASE \"{database}\" SET TimeZone TO 'Asia/Tokyo'")
    try:
        forget()
        listen_in_background()
        awaited(lambda: bool(insights.catalogue._seen))
        assert insights.catalogue._seen[0].state == release_state()
        assert (
            [release.built_at.utcoffset() for release in insights.catalogue._seen[0].releases]
            == [dt.timedelta(0)] * len(insights.catalogue._seen[0].releases)
            != []
        )
    finally:
        stop_listening()
        with connection.cursor() as cursor:
            cursor.execute(f'ALTER DATABASE "{database}" RESET TimeZone')


def test_of_two_reads_the_one_sent_later_is_kept_and_each_covers_what_was_heard_before_it():
    forget()
    later = Catalogue(state=("later",), releases=(), retained_from={}, read_at=2.0)
    earlier = Catalogue(state=("earlier",), releases=(), retained_from={}, read_at=1.0)
    insights.catalogue._keep(later, heard=["2@1.5"])
    insights.catalogue._keep(earlier, heard=["1@0.5", ""])
    assert insights.catalogue._seen == [later]
    assert list(insights.catalogue._covered) == ["2@1.5", "1@0.5"]  # an unnamed notice is never covered
    forget()
