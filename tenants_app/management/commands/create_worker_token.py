"""`manage.py create_worker_token`: a token for an external pipeline worker (the worker API only)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management.base import BaseCommand, CommandError, CommandParser

from tenants_app.services.admin_tokens import worker_token_create
from tenants_app.services.errors import ValidationFailed


class Command(BaseCommand):
    help = (
        "Issue a worker token (Authorization: Bearer ...) for the worker API, shown once. The account "
        f"must be in the {settings.PIPELINE_WORKERS_GROUP!r} group (PIPELINE_WORKERS_GROUP); --create "
        "makes a non-staff account in that group, with no password."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", required=True)
        parser.add_argument("--name", required=True, help="what the token is for, e.g. 'worker-pool-eu'")
        parser.add_argument(
            "--create", action="store_true", help="create the account (not staff, no password) if missing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        username = options["username"]
        user = User.objects.filter(username=username).first()
        if user is None:
            if not options["create"]:
                raise CommandError(f"no user {username!r} (use --create to make a worker account)")
            user = User.objects.create_user(username=username)
            user.set_unusable_password()
            user.save(update_fields=["password"])
            user.groups.add(Group.objects.get_or_create(name=settings.PIPELINE_WORKERS_GROUP)[0])
            if options["verbosity"] >= 1:
                self.stderr.write(
                    f"Created worker account {username!r} in {settings.PIPELINE_WORKERS_GROUP!r}."
                )
        try:
            issued = worker_token_create(user=user, name=options["name"])
        except ValidationFailed as exc:
            reasons = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.errors.items())
            raise CommandError(f"{exc.message}: {reasons}") from None
        self.stdout.write(issued.plaintext)
        if options["verbosity"] >= 1:
            self.stderr.write("Store this token now: it is not shown again.")
