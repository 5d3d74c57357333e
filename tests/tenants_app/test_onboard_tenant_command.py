"""`manage.py onboard_tenant` against the emulator: output, key shown once, dry run, errors, exit codes."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.cache import cache
from django.core.management import call_command
from django.core.management.base import CommandError
from pytest_django import Settings as SettingsWrapper

from bigquery_backend.client import BigQueryGateway
from bigquery_backend.exceptions import NotFound
from tenants_app.models import TenantApiKey, TenantProfile
from tenants_app.repositories import central_repository
from tenants_app.services.api_key_verification import api_key_verify, last_used_recorder
from tenants_app.services.bootstrap import bigquery_bootstrap

KEY = re.compile(r"cvg_live_[A-Za-z0-9]{40}")
REPOSITORY = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_leftovers() -> Iterator[None]:
    """No cached verification or pending `last_used_at` id outlives a test (other modules count jobs)."""
    yield
    cache.clear()
    last_used_recorder.reset()


@pytest.fixture
def central(central_dataset: str, settings: SettingsWrapper, tmp_path: Path) -> str:
    settings.DATA_DIR = tmp_path  # the local KMS key of this test, not the repository's
    bigquery_bootstrap()
    return central_dataset


def tenant_id() -> str:
    return f"cli_{uuid.uuid4().hex[:12]}"


def onboard(*args: str, **options: Any) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("onboard_tenant", *args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


def details(tenant: str, *extra: str) -> list[str]:
    return [tenant, "--company", "Acme Corp", "--email", "admin@acme.example", "--plan", "starter", *extra]


def test_it_onboards_a_tenant_and_prints_its_key_once_with_a_warning(central: str) -> None:
    tenant = tenant_id()

    out, err = onboard(*details(tenant))

    keys = KEY.findall(out)
    assert len(keys) == 1
    assert api_key_verify(key=keys[0]).tenant_id == tenant
    assert f"Onboarded tenant {tenant} (plan STARTER, dataset {tenant})." in out
    assert "shown only once" in err
    profile = central_repository(TenantProfile).get(tenant)
    assert profile.subscription_plan == "STARTER"
    assert central_repository(TenantApiKey).get(f"{tenant}_initial").created_by.startswith("cli:")


def test_it_prints_only_the_key_at_verbosity_zero(central: str) -> None:
    out, _ = onboard(*details(tenant_id()), verbosity=0)

    assert KEY.fullmatch(out.strip())


def test_it_lists_each_step_at_verbosity_two(central: str) -> None:
    out, _ = onboard(*details(tenant_id(), "--created-by", "alice"), verbosity=2)

    for step in ("profile", "subscription", "usage", "dataset", "views", "reader_access", "api_key"):
        assert re.search(rf"^  {step}: (done|nothing to do)$", out, re.MULTILINE), step


def test_it_prints_json_with_the_key_and_the_steps(central: str) -> None:
    tenant = tenant_id()

    out, _ = onboard(*details(tenant, "--json", "--created-by", "alice"))

    result = json.loads(out)
    assert (result["tenant_id"], result["plan"], result["dataset_id"]) == (tenant, "STARTER", tenant)
    assert KEY.fullmatch(result["api_key"]["key"])
    assert result["api_key"]["key_prefix"] == result["api_key"]["key"][:15]
    assert "shown only once" in result["api_key"]["warning"]
    assert result["steps_performed"][-1] == "api_key"
    assert central_repository(TenantApiKey).get(f"{tenant}_initial").created_by == "alice"


def test_it_validates_without_writing_in_a_dry_run(central: str, gateway: BigQueryGateway) -> None:
    tenant = tenant_id()

    out, _ = onboard(*details(tenant, "--dry-run"))
    as_json, _ = onboard(*details(tenant, "--dry-run", "--json"))

    assert f"Dry run: tenant {tenant} can be onboarded on plan STARTER; nothing was written." in out
    assert json.loads(as_json)["valid"] is True
    assert not KEY.search(out + as_json)
    assert central_repository(TenantProfile).find(tenant) is None
    with pytest.raises(NotFound):
        gateway.get_dataset(tenant)


def test_it_lists_every_field_error_in_one_command_error(gateway: BigQueryGateway) -> None:
    with gateway.count_jobs() as counter, pytest.raises(CommandError) as failure:
        onboard("Bad-Id", "--company", "A", "--email", "nope", "--plan", "gold")

    lines = str(failure.value).splitlines()
    assert lines[0] == "invalid input:"
    assert [line.split(":")[0].strip() for line in lines[1:]] == [
        "tenant_id",
        "company_name",
        "admin_email",
        "plan",
    ]
    assert counter.jobs == 0


def test_it_refuses_an_existing_tenant_without_printing_a_key(central: str) -> None:
    tenant = tenant_id()
    onboard(*details(tenant))

    with pytest.raises(CommandError, match=f"tenant {tenant} already exists") as failure:
        onboard(*details(tenant))

    assert not KEY.search(str(failure.value))


def test_it_exits_1_on_bad_input_and_2_on_bad_usage_without_a_traceback(tmp_path: Path) -> None:
    environment = {
        **os.environ,
        "DATA_DIR": str(tmp_path),
        "BIGQUERY_EMULATOR_HOST": django_settings.BIGQUERY_EMULATOR_HOST,
        "BIGQUERY_PROJECT": django_settings.BIGQUERY_PROJECT,
    }
    command = [sys.executable, "manage.py", "onboard_tenant"]

    bad_input = subprocess.run(  # noqa: S603 - our own interpreter and manage.py
        [*command, "x", "--company", "Acme", "--email", "a@acme.io", "--plan", "STARTER"],
        cwd=REPOSITORY,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    bad_usage = subprocess.run(  # noqa: S603
        [*command, "acme_usage"],
        cwd=REPOSITORY,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert bad_input.returncode == 1
    assert "CommandError: invalid input:\n  tenant_id: Use 3-50" in bad_input.stderr
    assert bad_usage.returncode == 2
    assert "--company" in bad_usage.stderr
    assert "Traceback" not in bad_input.stderr + bad_usage.stderr
