from django.db import migrations

# A notice on the channel footfall_releases_changed whenever a table the releases' state is read from
# (insights/catalogue.py) changes, sent by PostgreSQL at the commit: a worker that listens knows
# the catalogue it holds is current without asking the state each report. Nothing else changes.
TABLES = (
    "insights_release",
    "insights_datasetversion",
    "insights_releasepolicy",
    "insights_retentionmark",
    "insights_regionchanges",
)
NOTIFY_SQL = """
CREATE FUNCTION insights_catalogue_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('footfall_releases_changed', '');
    RETURN NULL;
END $$;
""" + "".join(
    f"CREATE TRIGGER insights_catalogue_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table}"
    " FOR EACH STATEMENT EXECUTE FUNCTION insights_catalogue_changed();\n"
    # Also under session_replication_role = replica (a restore with --disable-triggers, replication).
    f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER insights_catalogue_changed;\n"
    for table in TABLES
)
NOTIFY_REVERSE_SQL = (
    "".join(f"DROP TRIGGER insights_catalogue_changed ON {table};\n" for table in TABLES)
    + "DROP FUNCTION insights_catalogue_changed();\n"
)


class Migration(migrations.Migration):
    dependencies = [
        ("insights", "0013_drop_area_weights"),
    ]

    operations = [migrations.RunSQL(NOTIFY_SQL, NOTIFY_REVERSE_SQL)]
