"""A fresh data directory made by the real commands, in processes that start under a shell's umask."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from django.conf import settings

from tests.support.file_modes import SHELL_UMASK, accessible_to_others, all_paths

# Sessions in WAL mode (so that the -wal and -shm files exist), a KMS key, a cache entry; then what the
# directory holds while they are open, since SQLite deletes its -wal file when the last connection closes.
_USE_EVERYTHING = """
import json, pathlib
from django.conf import settings
from django.contrib.sessions.backends.db import SessionStore
from django.core.cache import cache
from django.db import connection
from tenants_app.kms import get_kms

with connection.cursor() as cursor:
    cursor.execute("PRAGMA journal_mode=WAL")
session = SessionStore()
session["k"] = "v"
session.save()
get_kms().encrypt(b"secret", aad=b"row")
cache.set("k", "v")
root = pathlib.Path(settings.DATA_DIR)
print(json.dumps({str(p.relative_to(root)): oct(p.lstat().st_mode & 0o777) for p in root.rglob("*")}))
"""


def manage(data_dir: Path, *args: str) -> str:
    """Run `manage.py` as an operator's shell would: umask 022, only DATA_DIR set, default files."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in {"DATABASE_URL", "CACHE_URL", "DJANGO_SECRET_KEY", "KMS_BACKEND"}
    }
    result = subprocess.run(  # noqa: S603 - our own interpreter and manage.py
        [sys.executable, "manage.py", *args],
        cwd=settings.BASE_DIR,
        env={**environment, "DATA_DIR": str(data_dir)},
        umask=SHELL_UMASK,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_it_creates_a_fresh_data_dir_and_everything_in_it_owner_only(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"

    manage(data_dir, "migrate", "--noinput")
    manage(data_dir, "ensure_admin")
    manage(data_dir, "collectstatic", "--noinput")
    while_open: dict[str, str] = json.loads(manage(data_dir, "shell", "-c", _USE_EVERYTHING).splitlines()[-1])

    assert {"portal.sqlite3-wal", "portal.sqlite3-shm", "kms-local.key", "admin-password"} <= set(while_open)
    assert {path: mode for path, mode in while_open.items() if mode not in {"0o600", "0o700"}} == {}
    assert {"portal.sqlite3", "secret_key", "staticfiles/admin/css/base.css", "cache"} <= all_paths(data_dir)
    assert accessible_to_others(data_dir) == {}
    manage(data_dir, "check")  # and the startup check agrees
