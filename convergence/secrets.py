"""Secrets that are generated once on first start and kept in the data directory."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def publish_private_file(path: Path, content: bytes) -> None:
    """Create `path` (mode 0600) with `content` unless it exists; racing writers leave exactly one."""
    path.parent.mkdir(parents=True, exist_ok=True)
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
