"""`manage.py revoke_admin_token`: list a staff member's admin API tokens, or revoke one."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tenants_app.models import AdminApiToken
from tenants_app.services.actors import system_actor
from tenants_app.services.admin_tokens import admin_token_revoke
from tenants_app.services.errors import DoesNotExist


class Command(BaseCommand):
    help = "Revoke an admin API token by id (see --list); it stops working at once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("token_id", nargs="?", type=int, help="id of the token to revoke")
        parser.add_argument("--list", action="store_true", help="list live tokens (id, user, name, prefix)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["list"]:
            for token in AdminApiToken.objects.filter(revoked_at__isnull=True).select_related("user"):
                last_used = token.last_used_at.isoformat() if token.last_used_at else "never"
                self.stdout.write(
                    f"{token.pk}\t{token.user.get_username()}\t{token.name}\t{token.token_prefix}…\t{last_used}"
                )
            return
        if options["token_id"] is None:
            raise CommandError("give a token id to revoke, or --list")
        try:
            admin_token_revoke(token_id=options["token_id"], actor=system_actor("revoke_admin_token"))
        except DoesNotExist:
            raise CommandError(f"no live admin token with id {options['token_id']}") from None
        if options["verbosity"] >= 1:
            self.stdout.write(f"Admin token {options['token_id']} revoked.")
