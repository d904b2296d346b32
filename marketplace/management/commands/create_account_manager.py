import secrets

from django.contrib.auth.models import Group, User
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from marketplace.staff import ACCOUNT_MANAGERS


class Command(BaseCommand):
    help = (
        "Create an account manager: a staff user in the account managers' group (not a superuser), who signs in"
        " at /admin/ with the email and the password printed once; change it there."
    )

    def add_arguments(self, parser):
        parser.add_argument("email")

    def handle(self, *args, email: str, **options):
        email = email.strip().lower()
        if User.objects.filter(username=email).exists():
            raise CommandError(f"{email} exists already; a superuser can add them to {ACCOUNT_MANAGERS!r} in the admin")
        password = secrets.token_urlsafe(12)
        with transaction.atomic():
            user = User.objects.create_user(username=email, email=email, password=password, is_staff=True)
            user.groups.add(Group.objects.get(name=ACCOUNT_MANAGERS))
        self.stderr.write(f"account manager {email}; sign in at /admin/ with this password, shown only now:")
        self.stdout.write(password)
