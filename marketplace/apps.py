from django.apps import AppConfig


class MarketplaceConfig(AppConfig):
    name = "marketplace"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from insights.signals import release_landed

        from . import schema  # noqa: F401  registers the Api-Key auth scheme and the geometry schema
        from .staff import ensure_account_managers_group

        # After the whole migrate, when every app's permissions exist.
        post_migrate.connect(ensure_account_managers_group, sender=self, dispatch_uid="account-managers")
        release_landed.connect(_release_landed, dispatch_uid="warm-ordered-areas")


def _release_landed(sender, *, release, **kwargs) -> None:
    # Imported here: the services and the engine behind them are not loaded in every process.
    from .services import release_warm_up_queue

    release_warm_up_queue(release=release)
