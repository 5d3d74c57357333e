from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from django.core.checks import Error
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from convergence.checks import check_data_dir_private

if TYPE_CHECKING:
    from pytest_django import Settings


@pytest.fixture
def data_dir(settings: Settings, tmp_path: Path) -> Path:
    """A private data directory of this test's own, with a few private files and directories."""
    root = tmp_path / "var"
    (root / "bigquery" / "storage").mkdir(parents=True, mode=0o700)
    root.chmod(0o700)
    (root / "bigquery").chmod(0o700)
    for path in [root / "portal.sqlite3", root / "secret_key", root / "bigquery" / "storage" / "db"]:
        path.write_text("x")
        path.chmod(0o600)
    settings.DATA_DIR = root
    return root


def fix(root: Path) -> str:
    return f"chmod 700 {root} && chmod -R go-rwx {root}"


def test_it_passes_a_private_data_dir(data_dir: Path) -> None:
    # A symlink's own mode (0777) is no exposure: what it points to is checked where it lives.
    (data_dir / "link").symlink_to(data_dir / "secret_key")

    assert check_data_dir_private() == []


def test_it_passes_a_data_dir_that_does_not_exist_yet(settings: Settings, tmp_path: Path) -> None:
    settings.DATA_DIR = tmp_path / "missing"

    assert check_data_dir_private() == []


def test_it_reports_a_0644_file_with_its_path_and_the_fix(data_dir: Path) -> None:
    (data_dir / "portal.sqlite3").chmod(0o644)

    [error] = check_data_dir_private()

    assert isinstance(error, Error)
    assert error.id == "convergence.E001"
    assert f"{data_dir / 'portal.sqlite3'} (mode 0644)" in error.msg
    assert "1 path(s)" in error.msg
    assert fix(data_dir) in error.hint


@pytest.mark.parametrize(
    ("relative", "mode"), [("", 0o755), ("bigquery", 0o750), ("bigquery/storage", 0o701)]
)
def test_it_reports_a_directory_that_group_or_others_can_enter(
    data_dir: Path, relative: str, mode: int
) -> None:
    (data_dir / relative).chmod(mode)

    [error] = check_data_dir_private()

    assert f"{data_dir / relative} (mode {mode:04o})" in error.msg
    assert fix(data_dir) in error.hint


def test_it_names_three_paths_and_counts_the_rest(data_dir: Path) -> None:
    for number in range(5):
        (data_dir / f"file{number}").write_text("x")
        (data_dir / f"file{number}").chmod(0o604)

    [error] = check_data_dir_private()

    assert "5 path(s)" in error.msg
    assert error.msg.count("(mode 0604)") == 3
    assert "and 2 more" in error.msg


def test_it_quotes_the_directory_in_the_fix(settings: Settings, tmp_path: Path) -> None:
    root = tmp_path / "data dir"
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    settings.DATA_DIR = root

    [error] = check_data_dir_private()

    assert f"chmod 700 '{root}' && chmod -R go-rwx '{root}'" in error.hint


def test_it_is_run_by_manage_py_check(data_dir: Path) -> None:
    call_command("check")  # clean while private
    (data_dir / "secret_key").chmod(0o640)

    with pytest.raises(SystemCheckError, match=r"convergence\.E001") as excinfo:
        call_command("check")

    assert str(data_dir / "secret_key") in str(excinfo.value)
    assert fix(data_dir) in str(excinfo.value)
