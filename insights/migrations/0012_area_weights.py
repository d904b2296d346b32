import django.contrib.postgres.fields
from django.db import migrations, models

# Only new tables (additive): the stored weights of the areas reports were run over
# (insights/areas.py), and the regions' change mark (insights/regions.py) with the trigger that
# moves it. The mark comes from a sequence: unlike a counter, it never repeats, not even after a
# rollback, so a worker's copy keyed by it is never taken for another state of the regions.
REGION_CHANGES_SQL = """
CREATE SEQUENCE insights_region_changes;
INSERT INTO insights_regionchanges (id, mark) VALUES (1, nextval('insights_region_changes'));
CREATE FUNCTION insights_region_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO insights_regionchanges (id, mark) VALUES (1, nextval('insights_region_changes'))
    ON CONFLICT (id) DO UPDATE SET mark = excluded.mark;
    RETURN NULL;
END $$;
CREATE TRIGGER insights_region_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON insights_region
FOR EACH STATEMENT EXECUTE FUNCTION insights_region_changed();
"""
REGION_CHANGES_REVERSE_SQL = """
DROP TRIGGER insights_region_changed ON insights_region;
DROP FUNCTION insights_region_changed();
DROP SEQUENCE insights_region_changes;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("insights", "0011_packed_raw"),
    ]

    operations = [
        migrations.CreateModel(
            name="AreaWeights",
            fields=[
                (
                    "key",
                    models.CharField(
                        help_text="sha256 of the weighing and the area's EWKB",
                        max_length=64,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                ("first_row", models.IntegerField()),
                ("last_row", models.IntegerField()),
                ("first_column", models.IntegerField()),
                ("last_column", models.IntegerField()),
                ("grid_cells", models.BigIntegerField(help_text="the grid's cells in that span when weighed")),
                ("grid_cell_ids", models.BigIntegerField(help_text="their ids summed")),
                (
                    "cell_ids",
                    django.contrib.postgres.fields.ArrayField(
                        base_field=models.BigIntegerField(), help_text="the covered cells, by code", size=None
                    ),
                ),
                (
                    "codes",
                    django.contrib.postgres.fields.ArrayField(base_field=models.CharField(max_length=40), size=None),
                ),
                (
                    "shares",
                    django.contrib.postgres.fields.ArrayField(
                        base_field=models.FloatField(), help_text="each cell's share inside the area", size=None
                    ),
                ),
                ("weighed_at", models.DateTimeField()),
            ],
        ),
        migrations.CreateModel(
            name="RegionChanges",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("mark", models.BigIntegerField()),
            ],
        ),
        migrations.RunSQL(REGION_CHANGES_SQL, REGION_CHANGES_REVERSE_SQL),
    ]
