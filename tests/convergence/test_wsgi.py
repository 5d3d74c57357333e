"""gunicorn's start-up runs the data directory check (gunicorn itself runs no system checks)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from tests.support.file_modes import SHELL_UMASK, accessible_to_others, all_paths


def private_data_dir(tmp_path: Path) -> Path:
    root = tmp_path / "var"
    root.mkdir(mode=0o700)
    (root / "secret_key").write_text("x" * 50)
    (root / "secret_key").chmod(0o600)
    return root


def gunicorn(data_dir: Path) -> tuple[int, str]:
    """Start gunicorn as `make run` does, on a free port; its exit code and log once it stops by itself."""
    process = subprocess.Popen(  # noqa: S603 - the venv's gunicorn, fixed arguments
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "convergence.wsgi",
            "--config",
            "python:convergence.gunicorn_conf",
            "--bind",
            "127.0.0.1:0",
            "--workers",
            "1",
        ],
        cwd=settings.BASE_DIR,
        env={**os.environ, "DATA_DIR": str(data_dir)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        log, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        # Still serving: stop the master and its workers (a killed master would leave them behind).
        os.killpg(process.pid, signal.SIGTERM)
        log, _ = process.communicate(timeout=30)
        pytest.fail(f"gunicorn started serving instead of refusing:\n{log}")
    return process.returncode, log


def test_it_refuses_to_serve_a_data_dir_others_can_read(tmp_path: Path) -> None:
    data_dir = private_data_dir(tmp_path)
    (data_dir / "portal.sqlite3").write_text("")
    (data_dir / "portal.sqlite3").chmod(0o644)

    returncode, log = gunicorn(data_dir)

    assert returncode == 3, log  # gunicorn's "Worker failed to boot."
    assert f"{data_dir / 'portal.sqlite3'} (mode 0644)" in log
    assert f"chmod 700 {data_dir} && chmod -R go-rwx {data_dir}" in log
    assert "convergence.E001" in log


def test_it_loads_the_application_on_a_fresh_data_dir_it_makes_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"

    result = subprocess.run(
        [sys.executable, "-c", "import convergence.wsgi as wsgi; print(callable(wsgi.application))"],
        cwd=settings.BASE_DIR,
        env={**os.environ, "DATA_DIR": str(data_dir)},
        umask=SHELL_UMASK,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
    assert "secret_key" in all_paths(data_dir)
    assert accessible_to_others(data_dir) == {}
