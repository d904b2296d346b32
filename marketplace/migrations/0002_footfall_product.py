from django.db import migrations

FOOTFALL = {
    "code": "footfall",
    "name": "Footfall",
    "description": "People present in an area per hour, day, week or month, in your time zone.",
}


def add_footfall(apps, schema_editor):
    Product = apps.get_model("marketplace", "Product")
    Product.objects.update_or_create(code=FOOTFALL["code"], defaults=FOOTFALL)


class Migration(migrations.Migration):
    dependencies = [("marketplace", "0001_initial")]

    operations = [migrations.RunPython(add_footfall, migrations.RunPython.noop)]
