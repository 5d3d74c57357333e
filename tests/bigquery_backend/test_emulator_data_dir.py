"""`python -m bigquery_backend.emulator start` (what `make run` uses) keeps its data dir owner-only."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import override_settings
from google.cloud import bigquery

from bigquery_backend.client import build_gateway
from bigquery_backend.emulator import free_port
from tests.support.file_modes import SHELL_UMASK, accessible_to_others, all_paths

PROJECT = "private-data"


def emulator(action: str, data_dir: Path, port: int) -> None:
    """Run the emulator's command line from a shell's umask, as scripts/run.sh does."""
    subprocess.run(  # noqa: S603 - our own interpreter and module
        [
            sys.executable,
            "-m",
            "bigquery_backend.emulator",
            action,
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
            "--project",
            PROJECT,
        ],
        umask=SHELL_UMASK,
        capture_output=True,
        timeout=90,
        check=True,
    )


@pytest.fixture
def persistent_emulator(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A detached persistent emulator with its data in a new directory; stopped, and gone, afterwards."""
    data_dir, port = tmp_path / "bigquery", free_port()
    emulator("start", data_dir, port)
    pid = int((data_dir / "emulator.pid").read_text())
    try:
        yield data_dir, f"http://127.0.0.1:{port}"
    finally:
        emulator("stop", data_dir, port)
        # Detached, so not our child: wait until it has exited and written its last file.
        deadline = time.monotonic() + 20
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)


def test_it_keeps_the_emulator_home_storage_and_log_owner_only(persistent_emulator: tuple[Path, str]) -> None:
    data_dir, url = persistent_emulator
    with override_settings(BIGQUERY_EMULATOR_HOST=url, BIGQUERY_PROJECT=PROJECT):
        gateway = build_gateway()
    gateway.create_dataset(bigquery.Dataset(gateway.dataset_ref("rows")))
    gateway.query("CREATE TABLE rows.t (x INT64)")
    gateway.query("INSERT INTO rows.t (x) VALUES (1)")

    assert {"emulator.log", "emulator.pid", "home", "storage"} <= all_paths(data_dir)
    assert any(path.startswith("storage/") for path in all_paths(data_dir)), "the rows are on disk"
    assert accessible_to_others(data_dir) == {}
