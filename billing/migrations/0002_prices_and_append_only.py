from decimal import Decimal

from django.db import migrations

# Launch prices per unit, in euros; account managers change them in the admin.
PRICES = {
    "footfall": ("cell_day", Decimal("0.002")),
    "dwell": ("cell_day", Decimal("0.003")),
    "compare": ("cell_day", Decimal("0.003")),
    "catchment": ("cell_day", Decimal("0.004")),
    "od-matrix": ("zone_day", Decimal("0.05")),
}

APPEND_ONLY = """
CREATE FUNCTION billing_usageline_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the usage ledger is append-only: % refused', TG_OP;
END $$;
CREATE TRIGGER billing_usageline_append_only BEFORE UPDATE OR DELETE ON billing_usageline
    FOR EACH ROW EXECUTE FUNCTION billing_usageline_append_only();
"""
DROP_APPEND_ONLY = """
DROP TRIGGER billing_usageline_append_only ON billing_usageline;
DROP FUNCTION billing_usageline_append_only();
"""


def add_prices(apps, schema_editor):
    Product, Price = apps.get_model("marketplace", "Product"), apps.get_model("billing", "Price")
    for code, (unit, unit_price) in PRICES.items():
        product = Product.objects.filter(code=code).first()
        if product:
            Price.objects.get_or_create(product=product, defaults={"unit": unit, "unit_price": unit_price})


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_ledger"), ("marketplace", "0007_catchment_and_od_matrix")]

    operations = [
        migrations.RunPython(add_prices, migrations.RunPython.noop),
        migrations.RunSQL(APPEND_ONLY, DROP_APPEND_ONLY),
    ]
