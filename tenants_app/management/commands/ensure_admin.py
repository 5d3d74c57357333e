"""`manage.py ensure_admin`: make sure a portal superuser exists, with a generated password shown once."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, transaction

from convergence.secrets import make_private_dir

DEFAULT_USERNAME = "admin"
PASSWORD_FILE_NAME = "admin-password"  # noqa: S105 - a file name, not a password


def password_file() -> Path:
    """Where the generated admin password is kept: `DATA_DIR/admin-password`."""
    return Path(settings.DATA_DIR) / PASSWORD_FILE_NAME


def write_secret_file(path: Path, value: str) -> None:
    """Write `value` to a new file that only the owner can read."""
    make_private_dir(path.parent)
    # O_EXCL with the mode given at creation: the password is never readable by others, not even
    # for the instant between a create and a chmod, and a planted file or symlink is never followed.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")


class Command(BaseCommand):
    help = (
        "Create a superuser with a generated password unless it already exists. The password is printed "
        "once and kept (mode 0600) in DATA_DIR/admin-password. Safe to run again at any time."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--username",
            help=f"superuser to ensure (default: $DJANGO_SUPERUSER_USERNAME or {DEFAULT_USERNAME!r})",
        )
        parser.add_argument("--dry-run", action="store_true", help="say what would be done; change nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        # Read at run time, not in add_arguments, so a DJANGO_SUPERUSER_USERNAME from .env counts too.
        username: str = options["username"] or os.environ.get("DJANGO_SUPERUSER_USERNAME") or DEFAULT_USERNAME
        dry_run: bool = options["dry_run"]
        verbosity: int = options["verbosity"]
        path = password_file()
        user_model = get_user_model()

        try:
            user = user_model._default_manager.filter(**{user_model.USERNAME_FIELD: username}).first()
        except DatabaseError as exc:
            raise CommandError(f"cannot read users ({exc}); run `manage.py migrate` first") from None

        if user is not None:
            if not user.is_superuser:
                # Promoting an existing account silently would hand it the keys to every tenant.
                raise CommandError(f"user {username!r} exists but is not a superuser; not changing it")
            if verbosity >= 1:
                self.stdout.write(f"Superuser {username!r} already exists. {self._where(path)}")
            return

        if dry_run:
            if verbosity >= 1:
                stale = " (replacing the stale file there)" if path.exists() else ""
                self.stdout.write(
                    f"Dry run: would create superuser {username!r} with a generated password "
                    f"and store it (mode 0600) in {path}{stale}."
                )
            return

        password = secrets.token_urlsafe(24)
        # One transaction: if the password cannot be stored, no user is left behind whose password
        # nobody knows.
        with transaction.atomic():
            user_model._default_manager.create_superuser(
                **{user_model.USERNAME_FIELD: username}, email="", password=password
            )
            if path.exists() or path.is_symlink():
                # A file from an earlier database (deleted or replaced): its password opens nothing.
                path.unlink()
                if verbosity >= 1:
                    self.stdout.write(f"Removed stale {path} (no user {username!r} in this database).")
            write_secret_file(path, password)

        if verbosity >= 1:
            self.stdout.write(self.style.SUCCESS(f"Created superuser {username!r}."))
            self.stdout.write(f"  username: {username}")
            self.stdout.write(f"  password: {password}")
            self.stdout.write(f"This password is shown only once; it is kept (mode 0600) in {path}.")

    @staticmethod
    def _where(path: Path) -> str:
        if path.exists():
            return f"Its generated password is in {path}."
        return f"No generated password in {path}: it was created otherwise (see `manage.py changepassword`)."
