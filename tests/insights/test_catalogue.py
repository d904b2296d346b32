"""The releases' state, which every report asks, and the catalogue, which every worker reads again
after each release (insights/catalogue.py): prepared once a session, and still prepared after a
transaction that is rolled back."""

from django.db import connection, transaction

from insights.catalogue import catalogue, forget, release_state


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
