from django.db import migrations

PRODUCTS = [
    {
        "code": "catchment",
        "name": "Catchment",
        "description": "Where the people present in the area live: count and share per home region for the period.",
        "breakdowns": [],
    },
    {
        "code": "od-matrix",
        "name": "Origin-destination matrix",
        "description": "Trips between zones per bucket, as a matrix over the period and as a flow list.",
        "breakdowns": [],
    },
]


def add_products(apps, schema_editor):
    Product = apps.get_model("marketplace", "Product")
    for product in PRODUCTS:
        Product.objects.update_or_create(code=product["code"], defaults=product)


class Migration(migrations.Migration):
    dependencies = [("marketplace", "0006_report_regions")]

    operations = [migrations.RunPython(add_products, migrations.RunPython.noop)]
