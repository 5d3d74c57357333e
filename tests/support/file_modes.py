"""File modes for the data directory tests: a shell's umask, and what of a tree others can access."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# A login shell's usual umask: what the code ran under before it set its own (files 0644, dirs 0755).
SHELL_UMASK = 0o022


@contextmanager
def shell_umask() -> Iterator[None]:
    """Run the block under SHELL_UMASK (the test process has the settings' 0o077), then restore it."""
    previous = os.umask(SHELL_UMASK)
    try:
        yield
    finally:
        os.umask(previous)


def accessible_to_others(root: Path) -> dict[str, str]:
    """Path (relative to `root`) -> octal mode of `root` and everything under it with group/other bits.

    Written apart from convergence.checks on purpose: the tests of what the code creates must not trust
    the check they also test.
    """
    found = {}
    for path in [root, *root.rglob("*")]:
        info = path.lstat()
        if not stat.S_ISLNK(info.st_mode) and info.st_mode & 0o077:
            found[str(path.relative_to(root))] = f"{stat.S_IMODE(info.st_mode):04o}"
    return found


def all_paths(root: Path) -> set[str]:
    """Every path under `root`, relative to it."""
    return {str(path.relative_to(root)) for path in root.rglob("*")}
