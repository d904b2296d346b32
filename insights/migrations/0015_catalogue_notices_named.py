from django.db import migrations

# Each notice on footfall_releases_changed names the transaction that sent it (its id and start
# time, which no other commit shares, even after the database is restored to an earlier point):
# a worker whose session hears it knows whether its process's listener read the catalogue after
# that commit (insights/catalogue.py). Identical notices of one transaction are still sent once.
NAMED_SQL = """
CREATE OR REPLACE FUNCTION insights_catalogue_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('footfall_releases_changed', pg_current_xact_id()::text || '@' || extract(epoch FROM now())::text);
    RETURN NULL;
END $$;
"""
UNNAMED_SQL = """
CREATE OR REPLACE FUNCTION insights_catalogue_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('footfall_releases_changed', '');
    RETURN NULL;
END $$;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("insights", "0014_catalogue_changes_notified"),
    ]

    operations = [migrations.RunSQL(NAMED_SQL, UNNAMED_SQL)]
