# /metrics counts reports by product and status at each scrape (docs/operations.md).

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    # Built without locking out the orders being written meanwhile.
    atomic = False

    dependencies = [
        ("marketplace", "0022_admin"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="report",
            index=models.Index(fields=["product", "status"], name="report_product_status"),
        ),
    ]
