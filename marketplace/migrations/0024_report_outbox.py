from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False  # the index is built without blocking orders
    dependencies = [("marketplace", "0023_observability")]

    operations = [
        migrations.AddField(
            model_name="report",
            name="published_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        # Reports queued before the outbox existed had their message sent then.
        migrations.RunSQL(
            "UPDATE marketplace_report SET published_at = queued_at WHERE status = 'queued'",
            reverse_sql=migrations.RunSQL.noop,
        ),
        AddIndexConcurrently(
            model_name="report",
            index=models.Index(
                condition=models.Q(("published_at__isnull", True), ("status", "queued")),
                fields=["queued_at"],
                name="report_unpublished",
            ),
        ),
    ]
