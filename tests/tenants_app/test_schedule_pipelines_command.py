"""`manage.py schedule_pipelines` against the emulator: output, dry run, --now, catch-up, idempotence."""

from __future__ import annotations

import io
import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tenants_app.models import TenantPipelineConfig, TenantScheduledPipelineRun
from tenants_app.repositories import central_repository
from tests.tenants_app.services.schedules import T0, add_tenant, config_row

pytestmark = pytest.mark.usefixtures("central")


def schedule(*args: str) -> str:
    out = io.StringIO()
    call_command("schedule_pipelines", *args, stdout=out)
    return out.getvalue()


def scheduled_json(*args: str) -> dict[str, Any]:
    return json.loads(schedule("--json", *args))


def add_hourly(n: int = 1) -> tuple[str, list[TenantPipelineConfig]]:
    tenant_id = add_tenant(prefix=f"cmd{uuid.uuid4().hex[:4]}")
    rows = [config_row(tenant_id, i) for i in range(n)]
    central_repository(TenantPipelineConfig).insert(*rows)
    return tenant_id, rows


def slots_of(tenant_id: str) -> list[Any]:
    runs = central_repository(TenantScheduledPipelineRun).list(
        filters={"tenant_id": tenant_id}, order_by=("scheduled_time",)
    )
    return [run.scheduled_time for run in runs]


def test_it_enqueues_due_slots_and_says_so() -> None:
    tenant_id, _ = add_hourly(2)
    output = schedule("--now", (T0 + timedelta(minutes=1)).isoformat())
    assert "Enqueued 2 run(s) for 2 config(s)" in output
    assert slots_of(tenant_id) == [T0, T0]


def test_it_is_idempotent() -> None:
    tenant_id, _ = add_hourly()
    now = (T0 + timedelta(hours=1, minutes=2)).isoformat()
    first = scheduled_json("--now", now)
    second = scheduled_json("--now", now)
    assert first["runs_enqueued"] >= 2
    assert second["runs_enqueued"] == 0
    assert slots_of(tenant_id) == [T0, T0 + timedelta(hours=1)]


def test_it_changes_nothing_on_a_dry_run_and_lists_slots_at_verbosity_2() -> None:
    tenant_id, rows = add_hourly()
    output = schedule("--dry-run", "--now", (T0 + timedelta(minutes=5)).isoformat(), "-v", "2")
    assert output.startswith("Would enqueue")
    assert f"{rows[0].config_id} {T0.isoformat()}" in output
    assert slots_of(tenant_id) == []


def test_it_catches_up_at_most_max_catch_up_slots() -> None:
    tenant_id, _ = add_hourly()
    report = scheduled_json("--now", (T0 + timedelta(hours=9, minutes=5)).isoformat(), "--max-catch-up", "2")
    assert slots_of(tenant_id) == [T0 + timedelta(hours=8), T0 + timedelta(hours=9)]
    assert report["slots_skipped"] >= 8
    assert report["max_catch_up"] == 2


def test_it_prints_nothing_at_verbosity_0() -> None:
    add_hourly()
    assert schedule("--now", (T0 + timedelta(days=3)).isoformat(), "-v", "0") == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--now", "yesterday"), "not an ISO 8601"),
        (("--now", "2026-03-29T01:00:00"), "needs a time zone"),
        (("--max-catch-up", "0"), "at least 1"),
    ],
)
def test_it_refuses_bad_options(args: tuple[str, ...], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        schedule(*args)
