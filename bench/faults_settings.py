"""The service's settings with a statement timeout on every query once connected: the fault
runner's poison worker, whose report queries the database cancels.

Set after the connection is made (not in libpq's options, nor PGOPTIONS, which the settings'
`options` override): with it from the start, Django's PostGIS backend fails its type lookup on
connecting and leaves that connection open, so a worker retrying exhausts max_connections."""

import os

from django.db.backends.signals import connection_created

from marketplace.settings import *  # noqa: F403

STATEMENT_TIMEOUT_MS = int(os.environ.get("FAULTS_STATEMENT_TIMEOUT", "1"))


def _statement_timeout(sender, connection, **kwargs):
    with connection.cursor() as cursor:
        cursor.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")


connection_created.connect(_statement_timeout, weak=False)
