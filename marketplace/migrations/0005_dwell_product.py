from django.db import migrations

DWELL = {
    "code": "dwell",
    "name": "Dwell time",
    "description": "Visitors per bucket by how long they stayed: <15 min, 15-60 min, 1-3 h, >3 h.",
    "breakdowns": [],
}


def add_dwell(apps, schema_editor):
    apps.get_model("marketplace", "Product").objects.update_or_create(code=DWELL["code"], defaults=DWELL)


class Migration(migrations.Migration):
    dependencies = [("marketplace", "0004_compare")]

    operations = [migrations.RunPython(add_dwell, migrations.RunPython.noop)]
