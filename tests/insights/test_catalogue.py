"""The releases' state and the catalogue, which every worker reads again after each release
(insights/catalogue.py): prepared once a session, and still prepared after a transaction that
is rolled back; a worker that listens for changes asks nothing until one is committed, and then
reads it; inside a transaction, the state is asked at every look."""

import importlib
import re

import psycopg
import pytest
from django.db import connection, transaction

import insights.catalogue
from insights.catalogue import catalogue, forget, release_state

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
