from __future__ import annotations

import stat
from io import StringIO
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from tests.support.file_modes import shell_umask

if TYPE_CHECKING:
    # Only the type checker needs it, and only recent pytest-django releases export it.
    from pytest_django import Settings


@pytest.fixture
def data_dir(settings: Settings, tmp_path: Path) -> Path:
    """A DATA_DIR of this test's own, so the password file never lands in the real one."""
    settings.DATA_DIR = tmp_path
    return tmp_path


def run(*args: str) -> str:
    out = StringIO()
    call_command("ensure_admin", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_it_creates_a_superuser_and_a_0600_password_file(data_dir: Path) -> None:
    output = run()

    password_file = data_dir / "admin-password"
    password = password_file.read_text().strip()
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert len(password) >= 32
    user = get_user_model().objects.get(username="admin")
    assert user.is_superuser
    assert user.is_staff
    assert user.check_password(password)
    assert "admin" in output
    assert password in output


@pytest.mark.django_db
def test_it_keeps_the_password_and_does_not_print_it_on_a_second_run(data_dir: Path) -> None:
    run()
    password = (data_dir / "admin-password").read_text().strip()
    password_hash = get_user_model().objects.get(username="admin").password

    output = run()

    assert password not in output
    assert "already exists" in output
    assert str(data_dir / "admin-password") in output
    assert get_user_model().objects.get(username="admin").password == password_hash
    assert (data_dir / "admin-password").read_text().strip() == password


@pytest.mark.django_db
def test_it_creates_nothing_on_a_dry_run(data_dir: Path) -> None:
    output = run("--dry-run")

    assert "would create" in output
    assert not get_user_model().objects.exists()
    assert not (data_dir / "admin-password").exists()


@pytest.mark.django_db
def test_it_honours_the_username_option_and_environment(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "root_from_env")
    run()
    run("--username", "ops")

    assert set(get_user_model().objects.values_list("username", flat=True)) == {"root_from_env", "ops"}


@pytest.mark.django_db
def test_it_refuses_to_promote_an_existing_regular_user(data_dir: Path) -> None:
    get_user_model().objects.create_user(username="admin", password="not-generated-here")

    with pytest.raises(CommandError, match="not a superuser"):
        run()

    assert not get_user_model().objects.get(username="admin").is_superuser
    assert not (data_dir / "admin-password").exists()


@pytest.mark.django_db
def test_it_replaces_a_stale_password_file_when_the_user_is_gone(data_dir: Path) -> None:
    (data_dir / "admin-password").write_text("stale\n")

    output = run()

    password = (data_dir / "admin-password").read_text().strip()
    assert password != "stale"
    assert password in output
    assert stat.S_IMODE((data_dir / "admin-password").stat().st_mode) == 0o600
    assert get_user_model().objects.get(username="admin").check_password(password)


@pytest.mark.django_db
def test_it_prints_nothing_at_verbosity_zero(data_dir: Path) -> None:
    out = StringIO()
    call_command("ensure_admin", verbosity=0, stdout=out)

    assert out.getvalue() == ""
    assert (data_dir / "admin-password").exists()


@pytest.mark.django_db
def test_it_creates_a_missing_data_dir_0700_under_a_shell_umask(settings: Settings, tmp_path: Path) -> None:
    settings.DATA_DIR = tmp_path / "var"

    with shell_umask():
        run()

    assert stat.S_IMODE((tmp_path / "var").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "var" / "admin-password").stat().st_mode) == 0o600
