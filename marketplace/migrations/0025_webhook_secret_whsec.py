"""Webhook secrets in the Standard Webhooks form, whsec_<base64 of the key's bytes>.

An endpoint registered before signed with the bytes of its hex secret as the HMAC key; its new
form encodes those very bytes, so its signatures, and its buyer's copy of the secret, still hold
(docs/webhooks.md)."""

import base64

from django.db import migrations, models

PREFIX = "whsec_"


def secrets_to_whsec(apps, schema_editor):
    WebhookEndpoint = apps.get_model("marketplace", "WebhookEndpoint")
    for endpoint in WebhookEndpoint.objects.exclude(secret__startswith=PREFIX).only("secret"):
        endpoint.secret = PREFIX + base64.b64encode(endpoint.secret.encode()).decode()
        endpoint.save(update_fields=["secret"])


def secrets_to_plain(apps, schema_editor):
    """Back to the key as text, where its bytes are text (every secret made before 0025)."""
    WebhookEndpoint = apps.get_model("marketplace", "WebhookEndpoint")
    for endpoint in WebhookEndpoint.objects.filter(secret__startswith=PREFIX).only("secret"):
        key = base64.b64decode(endpoint.secret.removeprefix(PREFIX))
        try:
            endpoint.secret = key.decode("ascii")
        except UnicodeDecodeError:
            raise RuntimeError(
                f"webhook endpoint {endpoint.pk} has a key made after 0025 that the old code cannot use: delete it"
            ) from None
        endpoint.save(update_fields=["secret"])


class Migration(migrations.Migration):
    dependencies = [("marketplace", "0024_report_outbox")]

    operations = [
        migrations.AlterField(
            model_name="webhookendpoint",
            name="secret",
            field=models.CharField(
                help_text="whsec_ and the base64 of the HMAC-SHA256 key of the signatures; shown once", max_length=100
            ),
        ),
        migrations.RunPython(secrets_to_whsec, secrets_to_plain),
    ]
