from __future__ import annotations

import stat
from pathlib import Path

from convergence.secrets import read_or_create_secret
from tests.support.file_modes import shell_umask


def test_it_creates_the_missing_data_dir_0700_and_the_secret_0600_under_a_shell_umask(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"

    with shell_umask():
        secret = read_or_create_secret(data_dir / "secret_key")

    assert len(secret) >= 50
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((data_dir / "secret_key").stat().st_mode) == 0o600
