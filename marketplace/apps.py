from django.apps import AppConfig


class MarketplaceConfig(AppConfig):
    name = "marketplace"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from insights.signals import release_landed

        from . import schema  # noqa: F401  registers the Api-Key auth scheme and the geometry schema
        from .services.warmup import warm_up_after_release
        from .staff import ensure_account_managers_group

        # After the whole migrate, when every app's permissions exist.
        post_migrate.connect(ensure_account_managers_group, sender=self, dispatch_uid="account-managers")
        release_landed.connect(warm_up_after_release, dispatch_uid="warm-ordered-areas")
