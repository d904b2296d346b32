"""The releases' state, which every report asks (insights/catalogue.py): prepared once a session,
and still prepared after a transaction that is rolled back."""

from django.db import connection, transaction

from insights.catalogue import catalogue, release_state


def prepared() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE name = 'footfall_release_state'")
        return cursor.fetchone()[0]


def test_the_releases_state_is_prepared_once_a_session_and_outlives_a_rollback(city):
    with transaction.atomic():
        first = release_state()
        transaction.set_rollback(True)

    assert prepared() == 1
    assert [release_state() for _ in range(3)] == [first] * 3
    assert prepared() == 1
    assert catalogue().state == first  # the full read's state is the same, so the catalogue is kept
