"""The private data directory, and the secrets generated once on first start and kept in it."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

# Owner-only: the data directory holds sessions, keys and passwords, which no other local account may
# read (one copied an admin session id out of a 0644 SQLite file). Group and others get no bits at all.
PRIVATE_UMASK = 0o077
PRIVATE_DIR_MODE = 0o700


def private_files_only() -> None:
    """From now on, every file and directory this process (and its children) creates is owner-only."""
    # A umask rather than a mode at each creation: SQLite and its -journal/-wal files, collectstatic, the
    # cache and the emulator create files through code we do not control, and what is added later is
    # covered without anyone remembering to.
    os.umask(PRIVATE_UMASK)


def make_private_dir(path: Path) -> None:
    """Create `path` (mode 0700) and missing parents unless it exists; an existing one is left as it is."""
    # The explicit mode keeps the directory private even in a process that never set the umask; an
    # existing directory is not chmod-ed: the system check (convergence/checks.py) reports it instead.
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)


def publish_private_file(path: Path, content: bytes) -> None:
    """Create `path` (mode 0600) with `content` unless it exists; racing writers leave exactly one."""
    make_private_dir(path.parent)
    # O_EXCL on a private temp file, then link(2) to the final name: link fails if the name exists,
    # and unlike O_EXCL on the final name a racing reader never sees a half-written file.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            # Losing a key file loses what it protects: make it durable before anyone uses it.
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        tmp.unlink(missing_ok=True)


def read_or_create_secret(path: Path, *, nbytes: int = 50) -> str:
    """Return the secret stored at `path`, creating it (mode 0600) on first use."""
    if not path.exists():
        publish_private_file(path, (secrets.token_urlsafe(nbytes) + "\n").encode())
    return path.read_text().strip()
