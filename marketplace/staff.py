"""The account managers' staff group: exactly the admin permissions their work needs."""

from django.apps import apps
from django.contrib.auth.management import create_permissions
from django.contrib.auth.models import Group, Permission

ACCOUNT_MANAGERS = "Account managers"
# model: the actions allowed on it (Django's add / change / delete / view).
ACCOUNT_MANAGER_PERMISSIONS = {
    ("marketplace", "tenant"): ("add", "change", "view"),
    ("marketplace", "membership"): ("add", "change", "delete", "view"),
    ("marketplace", "apikey"): ("change", "view"),  # revoke; keys are created where their secret can be shown
    ("marketplace", "product"): ("view",),
    ("marketplace", "licensedregion"): ("add", "change", "view"),
    ("marketplace", "area"): ("view",),
    ("marketplace", "report"): ("change", "view"),  # re-run and cancel
    ("marketplace", "share"): ("view",),
    ("marketplace", "release"): ("view",),
    ("marketplace", "auditevent"): ("view",),
    ("marketplace", "webhookendpoint"): ("view",),
    ("marketplace", "webhookdelivery"): ("view",),
    ("billing", "usageline"): ("add", "view"),  # add: a credit, with a reason
    ("billing", "price"): ("view",),
    ("billing", "pricetier"): ("view",),
    ("billing", "quote"): ("view",),
    ("billing", "invoice"): ("view",),
    ("billing", "stripeevent"): ("view",),
    ("billing", "stripeaccount"): ("view",),
    ("billing", "usagesync"): ("view",),
    ("billing", "billingprofile"): ("add", "change", "view"),  # address, e-mail, VAT ID
    ("billing", "monthclose"): ("view",),
    ("billing", "creditnote"): ("view",),
    ("insights", "datasetversion"): ("view",),
    ("insights", "region"): ("view",),
    ("auth", "user"): ("add", "change", "view"),
    # Products and regions are granted on the tenant's page, through the services that log it; no
    # rights on guardian's object permissions, which would grant them unlogged.
}


def ensure_account_managers_group(**kwargs) -> None:
    """Create or correct the group after every migrate (post_migrate)."""
    # Other apps' permissions may be created after this app's post_migrate: make sure of them.
    for app_config in apps.get_app_configs():
        create_permissions(app_config, verbosity=0)
    group, _ = Group.objects.get_or_create(name=ACCOUNT_MANAGERS)
    wanted = [
        Permission.objects.get(content_type__app_label=app, codename=f"{action}_{model}")
        for (app, model), actions in ACCOUNT_MANAGER_PERMISSIONS.items()
        for action in actions
    ]
    group.permissions.set(wanted)
