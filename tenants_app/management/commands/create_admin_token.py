"""`manage.py create_admin_token`: issue an admin API token for a staff member."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError, CommandParser

from tenants_app.services.actors import system_actor
from tenants_app.services.admin_tokens import admin_token_create
from tenants_app.services.errors import ValidationFailed


class Command(BaseCommand):
    help = "Issue an admin API token (Authorization: Bearer ...) for a staff member; it is shown once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", required=True)
        parser.add_argument("--name", required=True, help="what the token is for, e.g. 'terraform'")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            user = User.objects.get(username=options["username"])
        except User.DoesNotExist:
            raise CommandError(f"no user {options['username']!r}") from None
        try:
            issued = admin_token_create(
                user=user, name=options["name"], actor=system_actor("create_admin_token")
            )
        except ValidationFailed as exc:
            reasons = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.errors.items())
            raise CommandError(f"{exc.message}: {reasons}") from None
        self.stdout.write(issued.plaintext)
        if options["verbosity"] >= 1:
            self.stderr.write("Store this token now: it is not shown again.")
