"""Test helpers for the execution queue: runs enqueued directly, with the scheduler's row contract."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from django.utils import timezone

from tenants_app.models import RunState, TenantPipelineExecutionQueue, TenantScheduledPipelineRun
from tenants_app.repositories import central_repository

PAST = datetime(2020, 1, 1, tzinfo=UTC)


def enqueue(
    tenant_id: str,
    *,
    run_id: str | None = None,
    priority: int = 5,
    scheduled_time: datetime = PAST,
    max_retries: int = 3,
    parameters: Any = None,
    config_id: str = "cfg_daily",
    pipeline_id: str = "gcp_cost_ingest",
) -> str:
    """Insert a QUEUED scheduled run and its queue entry (two DML), as the scheduler writes them."""
    run_id = run_id or f"run_{uuid.uuid4().hex[:12]}"
    now = timezone.now()
    central_repository(TenantScheduledPipelineRun).insert(
        TenantScheduledPipelineRun(
            run_id=run_id,
            config_id=config_id,
            tenant_id=tenant_id,
            pipeline_id=pipeline_id,
            state=RunState.QUEUED,
            scheduled_time=scheduled_time,
            priority=priority,
            parameters=parameters,
            retry_count=0,
            max_retries=max_retries,
            created_at=now,
        )
    )
    central_repository(TenantPipelineExecutionQueue).insert(
        TenantPipelineExecutionQueue(
            run_id=run_id,
            tenant_id=tenant_id,
            pipeline_id=pipeline_id,
            config_id=config_id,
            state=RunState.QUEUED,
            scheduled_time=scheduled_time,
            priority=priority,
            added_at=now,
            attempt=0,
        )
    )
    return run_id


def enqueue_many(tenant_id: str, specs: list[dict[str, Any]]) -> list[str]:
    """Insert several runs in two statements: each spec may set run_id, priority, scheduled_time."""
    now = timezone.now()
    runs, entries = [], []
    for spec in specs:
        run_id = spec.get("run_id") or f"run_{uuid.uuid4().hex[:12]}"
        common = {
            "run_id": run_id,
            "tenant_id": spec.get("tenant_id", tenant_id),
            "pipeline_id": "gcp_cost_ingest",
            "state": RunState.QUEUED,
            "scheduled_time": spec.get("scheduled_time", PAST),
            "priority": spec.get("priority", 5),
        }
        runs.append(
            TenantScheduledPipelineRun(
                config_id="cfg_daily", retry_count=0, max_retries=3, created_at=now, **common
            )
        )
        entries.append(TenantPipelineExecutionQueue(config_id="cfg_daily", added_at=now, attempt=0, **common))
    central_repository(TenantScheduledPipelineRun).insert(*runs)
    central_repository(TenantPipelineExecutionQueue).insert(*entries)
    return [run.run_id for run in runs]


def entry(run_id: str) -> TenantPipelineExecutionQueue:
    return central_repository(TenantPipelineExecutionQueue).get(run_id)


def run_row(run_id: str) -> TenantScheduledPipelineRun:
    return central_repository(TenantScheduledPipelineRun).get(run_id)
