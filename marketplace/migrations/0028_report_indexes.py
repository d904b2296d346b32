import django.contrib.gis.db.models.fields
import django.db.models.deletion
from django.contrib.postgres.indexes import GistIndex
from django.contrib.postgres.operations import AddIndexConcurrently, BtreeGistExtension
from django.db import migrations, models


class Migration(migrations.Migration):
    """A report's row is written four times: fewer indexes to write each time, and the fair-use
    count's indexes per tenant (a GiST over every tenant's areas served it, reading every order
    of the same shopping centre by anyone; its compare orders were found among all its orders)."""

    atomic = False  # the new index is built without blocking orders
    dependencies = [("marketplace", "0027_report_final_notify")]

    operations = [
        BtreeGistExtension(),
        AddIndexConcurrently(
            model_name="report",
            index=GistIndex(fields=["tenant", "geometry"], name="report_tenant_geometry"),
        ),
        AddIndexConcurrently(
            model_name="report",
            index=models.Index(
                condition=models.Q(("compare_geometry__isnull", False), ("compare_start__isnull", False), _connector="OR"),
                fields=["tenant"],
                name="report_tenant_compared",
            ),
        ),
        # The relay finds unsent reports among the queued ones by (status, queued_at).
        migrations.RemoveIndex(model_name="report", name="report_unpublished"),
        migrations.AlterField(
            model_name="report",
            name="compare_geometry",
            field=django.contrib.gis.db.models.fields.MultiPolygonField(
                blank=True, null=True, spatial_index=False, srid=4326
            ),
        ),
        migrations.AlterField(
            model_name="report",
            name="geometry",
            field=django.contrib.gis.db.models.fields.MultiPolygonField(spatial_index=False, srid=4326),
        ),
        # Covered by report_product_status (product, status) and (tenant, created_at). Only the
        # indexes go: altering the fields in the database would check every report's keys again.
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    f"DROP INDEX IF EXISTS {name}", f"CREATE INDEX {name} ON marketplace_report ({column})"
                )
                for name, column in (
                    ("marketplace_report_product_id_9c295bb5", "product_id"),
                    ("marketplace_report_tenant_id_e1a9343a", "tenant_id"),
                )
            ],
            state_operations=[
                migrations.AlterField(
                    model_name="report",
                    name=name,
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="reports",
                        to=f"marketplace.{name}",
                    ),
                )
                for name in ("product", "tenant")
            ],
        ),
    ]
