"""System checks of the project's own setup; registered in tenants_app.apps, run by `manage.py check`,
`runserver`, `migrate` and, before serving, convergence/wsgi.py."""

from __future__ import annotations

import logging
import os
import shlex
import stat
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error
from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)

DATA_DIR_EXPOSED = "convergence.E001"
# Enough for the operator to recognise the problem; the count says how much more there is.
_SHOWN_PATHS = 3


def exposed_paths(root: Path) -> list[tuple[Path, int]]:
    """`root` and everything under it that group or others can access, with its mode (symlinks skipped)."""
    try:
        root_mode = stat.S_IMODE(root.stat().st_mode)
    except FileNotFoundError:
        return []  # created private on first use
    exposed = [(root, root_mode)] if root_mode & 0o077 else []
    for directory, subdirectories, files in os.walk(root):
        subdirectories.sort()
        for name in [*subdirectories, *sorted(files)]:
            path = Path(directory, name)
            try:
                info = path.lstat()
            except FileNotFoundError:
                continue  # e.g. a SQLite journal that was just deleted
            # A symlink's own mode means nothing (and `chmod -R` leaves it); os.walk does not follow it.
            if not stat.S_ISLNK(info.st_mode) and stat.S_IMODE(info.st_mode) & 0o077:
                exposed.append((path, stat.S_IMODE(info.st_mode)))
    return exposed


def fix_command(root: Path) -> str:
    """The shell command that makes `root` and everything in it owner-only."""
    quoted = shlex.quote(str(root))
    return f"chmod 700 {quoted} && chmod -R go-rwx {quoted}"


def check_data_dir_private(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """convergence.E001 when the data directory or anything in it is group- or world-accessible."""
    root = Path(settings.DATA_DIR)
    exposed = exposed_paths(root)
    if not exposed:
        return []
    shown = ", ".join(f"{path} (mode {mode:04o})" for path, mode in exposed[:_SHOWN_PATHS])
    more = f" and {len(exposed) - _SHOWN_PATHS} more" if len(exposed) > _SHOWN_PATHS else ""
    return [
        Error(
            f"The data directory {root} holds sessions, keys and passwords, but {len(exposed)} path(s) in "
            f"it are accessible to other local accounts: {shown}{more}.",
            # We refuse instead of fixing it ourselves: loosened modes may be deliberate (a backup
            # account, a group) and are the operator's to undo, and the files may have been read already.
            hint=f"Make it private to the account that runs the portal: {fix_command(root)}",
            obj=str(root),
            id=DATA_DIR_EXPOSED,
        )
    ]


def refuse_exposed_data_dir() -> None:
    """Log the data directory check's error and raise, so that a server never starts serving with it."""
    errors = check_data_dir_private()
    if not errors:
        return
    message = f"{errors[0].msg} HINT: {errors[0].hint} ({errors[0].id})"
    logger.critical("refusing to start: %s", message)
    raise ImproperlyConfigured(message)
