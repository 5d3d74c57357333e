"""tenant_overview: the tenant page's data in a constant number of jobs, secrets blanked."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from bigquery_backend.client import BigQueryGateway
from tenants_app.models import (
    TenantApiKey,
    TenantCloudCredential,
    TenantDqResult,
    TenantPipelineConfig,
    TenantPipelineRun,
    TenantStepLog,
    TenantSubscription,
    TenantUsageQuota,
)
from tenants_app.repositories import central_repository, tenant_repository
from tenants_app.services.api_keys import api_key_create
from tenants_app.services.bootstrap import bigquery_bootstrap
from tenants_app.services.credentials import credential_create
from tenants_app.services.errors import DoesNotExist
from tenants_app.services.tenant_overview import UsageFigure, tenant_overview
from tests.tenants_app.services.conftest import MakeTenant

NOW = datetime(2026, 3, 17, 12, 0, tzinfo=UTC)
TODAY = NOW.date()


def subscribe(tenant_id: str, *, daily: int = 10, monthly: int = 100, concurrent: int = 2) -> None:
    central_repository(TenantSubscription).insert(
        TenantSubscription(
            subscription_id=f"{tenant_id}_subscription",
            tenant_id=tenant_id,
            plan_name="STARTER",
            status="ACTIVE",
            daily_limit=daily,
            monthly_limit=monthly,
            concurrent_limit=concurrent,
        )
    )


def usage(tenant_id: str, day: date, *, today: int, month: int, running: int = 0) -> TenantUsageQuota:
    return TenantUsageQuota(
        usage_id=f"{tenant_id}_{day:%Y%m%d}",
        tenant_id=tenant_id,
        usage_date=day,
        pipelines_run_today=today,
        pipelines_run_month=month,
        concurrent_pipelines_running=running,
        daily_limit=6,
        monthly_limit=180,
        concurrent_limit=1,
    )


def add_runs(tenant_id: str, count: int) -> None:
    bigquery_bootstrap(tenant_id=tenant_id)
    start = NOW - timedelta(days=1)
    tenant_repository(TenantPipelineRun, tenant_id).insert(
        *(
            TenantPipelineRun(
                pipeline_logging_id=f"run_{i}",
                tenant_id=tenant_id,
                pipeline_id="gcp_billing",
                status="SUCCEEDED",
                start_time=start + timedelta(minutes=i),
            )
            for i in range(count)
        )
    )
    tenant_repository(TenantStepLog, tenant_id).insert(
        *(
            TenantStepLog(
                step_logging_id=f"step_{i}_{index}",
                tenant_id=tenant_id,
                pipeline_logging_id=f"run_{i}",
                step_name=f"step {index}",
                step_type="LOAD",
                step_index=index,
                status="SUCCEEDED",
                start_time=start,
            )
            for i in range(count)
            for index in (1, 0)
        )
    )
    tenant_repository(TenantDqResult, tenant_id).insert(
        TenantDqResult(
            dq_result_id="dq_0",
            pipeline_logging_id="run_0",
            tenant_id=tenant_id,
            target_table="billing.costs",
            dq_config_id="not_null",
            executed_at=start,
            expectations_passed=3,
            expectations_failed=0,
            overall_status="PASS",
            ingestion_date=start.date(),
        )
    )


def test_it_gathers_runs_with_their_steps_and_dq_results_newest_first(make_tenant: MakeTenant) -> None:
    tenant_id = make_tenant()
    add_runs(tenant_id, 3)

    overview = tenant_overview(tenant_id=tenant_id, now=NOW)

    assert [detail.run.pipeline_logging_id for detail in overview.runs] == ["run_2", "run_1", "run_0"]
    assert [step.step_index for step in overview.runs[0].steps] == [0, 1]
    assert [dq.dq_result_id for dq in overview.runs[2].dq_results] == ["dq_0"]
    assert overview.runs[0].dq_results == []
    assert overview.dataset_missing is False


def test_it_costs_the_same_jobs_whatever_the_tenant_holds(
    make_tenant: MakeTenant, gateway: BigQueryGateway
) -> None:
    small, large = make_tenant(), make_tenant()
    add_runs(small, 1)
    add_runs(large, 8)
    for tenant_id, keys in ((small, 1), (large, 12)):
        subscribe(tenant_id)
        for i in range(keys):
            api_key_create(tenant_id=tenant_id, name=f"k{i}", scopes=["tenant:read"], created_by="user:t")

    counts = []
    for tenant_id in (small, large):
        with gateway.count_jobs() as counter:
            tenant_overview(tenant_id=tenant_id, now=NOW)
        counts.append(counter.jobs)

    # profile, subscription, usage, keys, credentials, configs, waiting runs, runs, runs' rows not yet
    # written to the dataset, then steps and DQ
    assert counts == [11, 11]


def test_it_skips_steps_and_results_when_there_are_no_runs(
    make_tenant: MakeTenant, gateway: BigQueryGateway
) -> None:
    tenant_id = make_tenant()
    bigquery_bootstrap(tenant_id=tenant_id)

    with gateway.count_jobs() as counter:
        overview = tenant_overview(tenant_id=tenant_id, now=NOW)

    assert overview.runs == []
    assert counter.jobs == 9


def test_it_notes_a_missing_dataset_and_shows_the_rest(make_tenant: MakeTenant) -> None:
    tenant_id = make_tenant()
    subscribe(tenant_id)

    overview = tenant_overview(tenant_id=tenant_id, now=NOW)

    assert overview.dataset_missing is True
    assert overview.runs == []
    assert overview.subscription is not None


@pytest.mark.parametrize("tenant_id", ["t_nobody_here", "DROP TABLE x", "a", "x" * 80])
def test_it_raises_does_not_exist_for_unknown_or_malformed_ids(central: str, tenant_id: str) -> None:
    with pytest.raises(DoesNotExist):
        tenant_overview(tenant_id=tenant_id)


def test_it_blanks_every_secret_column(make_tenant: MakeTenant) -> None:
    tenant_id = make_tenant()
    subscribe(tenant_id)
    api_key_create(tenant_id=tenant_id, name="k", scopes=["tenant:read"], created_by="user:t")
    credential_create(
        tenant_id=tenant_id,
        provider="OPENAI",
        name="prod",
        payload={"api_key": "sk-" + "a1" * 20},
        created_by="user:t",
    )
    assert central_repository(TenantApiKey).list(filters={"tenant_id": tenant_id})[0].api_key_hash

    overview = tenant_overview(tenant_id=tenant_id, now=NOW)

    (key,) = overview.api_keys
    (credential,) = overview.credentials
    assert key.api_key_hash == ""
    assert key.encrypted_api_key is None
    assert bytes(credential.encrypted_credentials) == b""
    assert credential.fingerprint
    stored = central_repository(TenantCloudCredential).list(filters={"tenant_id": tenant_id})[0]
    assert bytes(stored.encrypted_credentials)  # only the copy on the page was blanked


def test_it_measures_today_and_the_month_against_the_subscription(make_tenant: MakeTenant) -> None:
    tenant_id = make_tenant()
    subscribe(tenant_id, daily=10, monthly=100, concurrent=2)
    central_repository(TenantUsageQuota).insert(
        usage(tenant_id, TODAY - timedelta(days=1), today=4, month=70, running=1),
        usage(tenant_id, TODAY, today=8, month=78, running=1),
        usage(tenant_id, TODAY - timedelta(days=40), today=9, month=99),  # last month: ignored
    )

    overview = tenant_overview(tenant_id=tenant_id, now=NOW)

    assert [(f.label, f.used, f.limit, f.percent, f.flagged) for f in overview.usage_figures] == [
        ("Runs today", 8, 10, 80, True),
        ("Runs this month", 78, 100, 78, False),
        ("Running now", 1, 2, 50, False),
    ]


def test_it_gives_a_zero_filled_30_day_trend_ending_today(make_tenant: MakeTenant) -> None:
    tenant_id = make_tenant()
    central_repository(TenantUsageQuota).insert(
        usage(tenant_id, TODAY, today=3, month=9),
        usage(tenant_id, TODAY - timedelta(days=29), today=6, month=6),
        usage(tenant_id, TODAY - timedelta(days=30), today=7, month=7),  # one day too old
    )

    trend = tenant_overview(tenant_id=tenant_id, now=NOW).trend

    assert len(trend) == 30
    assert trend[0] == (TODAY - timedelta(days=29), 6)
    assert trend[-1] == (TODAY, 3)
    assert sum(runs for _, runs in trend) == 9


def test_it_shows_effective_limits_and_an_expired_trial(make_tenant: MakeTenant) -> None:
    tenant_id = make_tenant()
    central_repository(TenantSubscription).insert(
        TenantSubscription(
            subscription_id=f"{tenant_id}_subscription",
            tenant_id=tenant_id,
            plan_name="STARTER",
            status="TRIAL",
            trial_end_date=TODAY - timedelta(days=1),
            daily_limit=12,
            monthly_limit=180,
            concurrent_limit=1,
        )
    )

    overview = tenant_overview(tenant_id=tenant_id, now=NOW)

    assert overview.subscription_status == "EXPIRED"
    assert overview.limits is not None
    assert overview.limits.overridden == ("daily_limit",)
    assert overview.limits.max_providers == 3  # the plan's figure: the column is empty


def test_it_counts_zero_today_but_keeps_the_month_without_a_row_for_today(make_tenant: MakeTenant) -> None:
    tenant_id = make_tenant()
    subscribe(tenant_id, daily=10, monthly=100)
    central_repository(TenantUsageQuota).insert(
        usage(tenant_id, TODAY - timedelta(days=2), today=5, month=42)
    )

    overview = tenant_overview(tenant_id=tenant_id, now=NOW)

    assert overview.usage_today is None
    assert [f.used for f in overview.usage_figures] == [0, 42, 0]


def test_it_falls_back_to_the_usage_rows_limits_without_a_subscription(make_tenant: MakeTenant) -> None:
    tenant_id = make_tenant()
    central_repository(TenantUsageQuota).insert(usage(tenant_id, TODAY, today=3, month=3))

    overview = tenant_overview(tenant_id=tenant_id, now=NOW)

    assert overview.subscription is None
    assert [f.limit for f in overview.usage_figures] == [6, 180, 1]


def test_it_lists_the_tenants_pipeline_configs_most_urgent_first(make_tenant: MakeTenant) -> None:
    tenant_id, other = make_tenant(), make_tenant()
    central_repository(TenantPipelineConfig).insert(
        *(
            TenantPipelineConfig(
                config_id=f"{owner}_{priority}",
                tenant_id=owner,
                provider="GCP",
                domain="billing",
                pipeline_template="gcp_billing",
                schedule_cron="0 * * * *",
                priority=priority,
            )
            for owner in (tenant_id, other)
            for priority in (5, 1)
        )
    )

    overview = tenant_overview(tenant_id=tenant_id, now=NOW)

    assert [config.config_id for config in overview.pipeline_configs] == [f"{tenant_id}_1", f"{tenant_id}_5"]


@pytest.mark.parametrize(
    ("used", "limit", "percent", "flagged"),
    [
        (0, 10, 0, False),
        (79, 100, 79, False),
        (80, 100, 80, True),
        (12, 10, 120, True),
        (5, None, None, False),
    ],
)
def test_it_flags_a_figure_from_80_percent(
    used: int, limit: int | None, percent: int | None, flagged: bool
) -> None:
    figure = UsageFigure("Runs today", used, limit)

    assert figure.percent == percent
    assert figure.flagged is flagged
    assert figure.bar_percent == min(percent or 0, 100)
