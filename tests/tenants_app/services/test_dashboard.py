"""Quota dashboard and usage trend on the emulator: pressure order, flags, totals, zero-filled days, cost."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import pytest

from bigquery_backend.client import BigQueryGateway
from tenants_app.models import (
    PlanName,
    RunState,
    SubscriptionStatus,
    TenantPipelineExecutionQueue,
    TenantProfile,
    TenantStatus,
    TenantSubscription,
    TenantUsageQuota,
)
from tenants_app.repositories import central_repository
from tenants_app.services.bootstrap import bigquery_bootstrap
from tenants_app.services.dashboard import quota_dashboard, usage_trend
from tenants_app.services.errors import DoesNotExist, ValidationFailed
from tenants_app.services.plans import PLANS

DAY = date(2026, 3, 14)
NOON = datetime(2026, 3, 14, 12, tzinfo=UTC)


@dataclass
class Seed:
    """Rows to insert in up to four statements (profiles, subscriptions, usage, queue)."""

    profiles: list[TenantProfile]
    subscriptions: list[TenantSubscription]
    usage: list[TenantUsageQuota]
    queue: list[TenantPipelineExecutionQueue] = field(default_factory=list)

    def tenant(
        self,
        tenant_id: str,
        *,
        plan: str = PlanName.STARTER,
        status: str = TenantStatus.ACTIVE,
        subscribed: bool = True,
        **limits: int,
    ) -> str:
        self.profiles.append(
            TenantProfile(
                tenant_id=tenant_id,
                company_name=f"{tenant_id} Ltd",
                admin_email="ops@example.com",
                tenant_dataset_id=tenant_id,
                status=status,
                subscription_plan=plan,
                created_at=NOON - timedelta(days=60),
            )
        )
        if subscribed:
            catalogue = PLANS[plan]
            self.subscriptions.append(
                TenantSubscription(
                    subscription_id=f"sub_{uuid.uuid4().hex}",
                    tenant_id=tenant_id,
                    plan_name=plan,
                    status=SubscriptionStatus.ACTIVE,
                    daily_limit=limits.get("daily_limit", catalogue.daily_limit),
                    monthly_limit=limits.get("monthly_limit", catalogue.monthly_limit),
                    concurrent_limit=limits.get("concurrent_limit", catalogue.concurrent_limit),
                    created_at=NOON - timedelta(days=30),
                )
            )
        return tenant_id

    def usage_row(
        self,
        tenant_id: str,
        day: date = DAY,
        *,
        runs: int = 0,
        month: int | None = None,
        concurrent: int = 0,
        daily_limit: int = 6,
        written: datetime = NOON,
    ) -> None:
        self.usage.append(
            TenantUsageQuota(
                usage_id=f"{tenant_id}_{day:%Y%m%d}_{uuid.uuid4().hex[:6]}",
                tenant_id=tenant_id,
                usage_date=day,
                pipelines_run_today=runs,
                pipelines_succeeded_today=max(runs - 1, 0),
                pipelines_failed_today=min(runs, 1),
                pipelines_run_month=runs if month is None else month,
                concurrent_pipelines_running=concurrent,
                daily_limit=daily_limit,
                monthly_limit=180,
                concurrent_limit=1,
                last_updated=written,
                created_at=written,
            )
        )

    def queued(self, tenant_id: str, state: str = RunState.QUEUED) -> None:
        self.queue.append(
            TenantPipelineExecutionQueue(
                run_id=f"{tenant_id}_{uuid.uuid4().hex[:8]}",
                tenant_id=tenant_id,
                pipeline_id="sql_transform",
                state=state,
                scheduled_time=NOON,
            )
        )

    def save(self) -> None:
        for model, rows in (
            (TenantProfile, self.profiles),
            (TenantSubscription, self.subscriptions),
            (TenantUsageQuota, self.usage),
            (TenantPipelineExecutionQueue, self.queue),
        ):
            if rows:
                central_repository(model).insert(*rows)


@pytest.fixture
def seed(central_dataset: str) -> Seed:
    """A fresh, bootstrapped central dataset (the dashboard reads every tenant in it)."""
    bigquery_bootstrap()
    return Seed([], [], [])


def ids(rows: list) -> list[str]:
    return [row.tenant_id for row in rows]


def test_it_sorts_tenants_by_their_highest_share_of_any_limit_and_flags_from_80_percent(seed: Seed) -> None:
    seed.usage_row(seed.tenant("daily_high"), runs=5)  # 5/6 of the day
    seed.usage_row(seed.tenant("monthly_high"), runs=1, month=171)  # 171/180 of the month
    seed.usage_row(seed.tenant("concurrent_full"), runs=1, concurrent=1)  # 1/1 running, one waiting
    seed.queued("concurrent_full")
    seed.usage_row(seed.tenant("quiet"), runs=3)  # 3/6: 50%
    seed.tenant("idle")  # no usage row today: zero, listed last
    seed.save()

    board = quota_dashboard(day=DAY, today=DAY)

    assert ids(board.rows) == ["concurrent_full", "monthly_high", "daily_high", "quiet", "idle"]
    by_id = {row.tenant_id: row for row in board.rows}
    assert [row.flagged for row in board.rows] == [True, True, True, False, False]
    assert by_id["daily_high"].pressure == pytest.approx(5 / 6)
    assert by_id["daily_high"].pressure_on == "daily"
    assert by_id["monthly_high"].pressure_on == "monthly"
    assert by_id["concurrent_full"].pressure_on == "concurrent"
    assert (by_id["idle"].runs_today, by_id["idle"].pressure, by_id["idle"].has_usage_today) == (
        0,
        0.0,
        False,
    )
    assert by_id["idle"].daily_limit == PLANS[PlanName.STARTER].daily_limit
    assert board.total == 5


def test_it_does_not_flag_a_starter_tenant_running_its_one_run_with_nothing_waiting(seed: Seed) -> None:
    seed.usage_row(seed.tenant("alone"), runs=1, concurrent=1)  # 1/1 running
    seed.queued("alone", RunState.RUNNING)  # its own run: running, not waiting
    seed.save()

    [row] = quota_dashboard(day=DAY, today=DAY).rows

    assert (row.flagged, row.pressure_on) == (False, "daily")
    assert quota_dashboard(day=DAY, today=DAY, flagged_only=True).total == 0
    assert (row.concurrent, row.concurrent_limit, row.waiting) == (1, 1, 0)


def test_it_flags_a_tenant_at_its_concurrent_limit_with_a_run_waiting(seed: Seed) -> None:
    seed.usage_row(seed.tenant("held_back"), runs=1, concurrent=1)
    seed.queued("held_back", RunState.RUNNING)
    seed.queued("held_back")
    seed.queued("held_back")
    seed.usage_row(seed.tenant("busy_day"), runs=4)  # 4/6 with nothing waiting: listed after
    seed.save()

    board = quota_dashboard(day=DAY, today=DAY)

    assert ids(board.rows) == ["held_back", "busy_day"]
    row = board.rows[0]
    assert (row.flagged, row.pressure_on, row.pressure) == (True, "concurrent", 1.0)
    assert row.waiting == 2
    assert ids(quota_dashboard(day=DAY, today=DAY, flagged_only=True).rows) == ["held_back"]
    # The queue is as it is now: the dashboard of an earlier day does not count it.
    earlier = quota_dashboard(day=DAY, today=DAY + timedelta(days=1))
    assert [(r.tenant_id, r.waiting, r.flagged) for r in earlier.rows] == [
        ("busy_day", 0, False),
        ("held_back", 0, False),
    ]


@pytest.mark.parametrize(("runs", "flagged"), [(80, True), (79, False)])
def test_it_flags_runs_today_from_80_percent_of_the_daily_limit(seed: Seed, runs: int, flagged: bool) -> None:
    tenant = seed.tenant("daily", daily_limit=100, monthly_limit=3000, concurrent_limit=1)
    # Its one allowed run is running, with nothing waiting: only the day's runs can flag it.
    seed.usage_row(tenant, runs=runs, daily_limit=100, concurrent=1)
    seed.save()

    [row] = quota_dashboard(day=DAY, today=DAY).rows

    assert (row.flagged, quota_dashboard(day=DAY, today=DAY, flagged_only=True).total) == (
        flagged,
        int(flagged),
    )
    assert (row.runs_today, row.daily_limit, row.pressure_on) == (runs, 100, "daily")


def test_it_counts_this_months_earlier_runs_for_a_tenant_idle_today(seed: Seed) -> None:
    tenant = seed.tenant("idle_today")
    seed.usage_row(tenant, DAY - timedelta(days=1), runs=4, month=150)
    seed.usage_row(tenant, date(2026, 2, 28), runs=6, month=179)  # last month: not this month's total
    seed.save()

    [row] = quota_dashboard(day=DAY).rows

    assert (row.runs_today, row.runs_month, row.has_usage_today) == (0, 150, False)
    assert row.pressure == pytest.approx(150 / 180)


def test_it_uses_the_newest_subscriptions_limits(seed: Seed) -> None:
    tenant = seed.tenant("upgraded", daily_limit=6)
    seed.subscriptions.append(
        TenantSubscription(
            subscription_id=f"sub_{uuid.uuid4().hex}",
            tenant_id=tenant,
            plan_name=PlanName.SCALE,
            status=SubscriptionStatus.ACTIVE,
            daily_limit=100,
            monthly_limit=3000,
            concurrent_limit=10,
            created_at=NOON,
        )
    )
    seed.usage_row(tenant, runs=6)
    seed.save()

    [row] = quota_dashboard(day=DAY).rows

    assert (row.plan, row.daily_limit, row.flagged) == (PlanName.SCALE, 100, False)
    assert row.pressure == pytest.approx(0.06)


def test_it_totals_by_plan_and_leaves_offboarded_tenants_out(seed: Seed) -> None:
    seed.usage_row(seed.tenant("s1"), runs=6)
    seed.usage_row(seed.tenant("s2"), runs=1)
    seed.usage_row(seed.tenant("p1", plan=PlanName.PROFESSIONAL), runs=20, month=40)
    seed.usage_row(seed.tenant("gone", status=TenantStatus.CANCELLED), runs=6)
    seed.tenant("unsubscribed", subscribed=False)
    seed.save()

    board = quota_dashboard(day=DAY)

    assert "gone" not in ids(board.rows)
    totals = {t.plan: t for t in board.plans}
    assert set(totals) == {PlanName.STARTER, PlanName.PROFESSIONAL}
    starter = totals[PlanName.STARTER]
    assert (starter.tenants, starter.runs_today, starter.runs_month, starter.flagged) == (3, 7, 7, 1)
    # s1 and s2 from their subscriptions, the unsubscribed tenant has no limit at all.
    assert (starter.daily_limit, starter.monthly_limit) == (12, 360)
    professional = totals[PlanName.PROFESSIONAL]
    assert (professional.tenants, professional.runs_today, professional.flagged) == (1, 20, 1)
    assert professional.daily_limit == 25
    assert (board.overall.tenants, board.overall.runs_today, board.overall.flagged) == (4, 27, 2)


def test_it_filters_by_plan_and_flag_and_pages_with_the_matching_total(seed: Seed) -> None:
    for i in range(5):
        seed.usage_row(seed.tenant(f"starter_{i}"), runs=i + 1)  # 1/6 .. 5/6
    seed.usage_row(seed.tenant("scale_0", plan=PlanName.SCALE), runs=99)
    seed.save()

    first = quota_dashboard(day=DAY, plan=PlanName.STARTER, limit=2)
    second = quota_dashboard(day=DAY, plan=PlanName.STARTER, limit=2, offset=2)
    flagged = quota_dashboard(day=DAY, flagged_only=True)
    beyond = quota_dashboard(day=DAY, offset=50)

    assert (ids(first.rows), first.total) == (["starter_4", "starter_3"], 5)
    assert ids(second.rows) == ["starter_2", "starter_1"]
    assert (ids(flagged.rows), flagged.total) == (["scale_0", "starter_4"], 2)
    assert (beyond.rows, beyond.total) == ([], 6)


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"plan": "GOLD"}, "plan"),
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"offset": -1}, "offset"),
        ({"day": "2026-03-14"}, "day"),
        ({"day": NOON}, "day"),
    ],
)
def test_it_refuses_a_bad_filter_naming_the_field(arguments: dict, field: str) -> None:
    with pytest.raises(ValidationFailed) as failure:
        quota_dashboard(**arguments)

    assert field in failure.value.errors


@pytest.mark.parametrize("tenants", [3, 30])
def test_it_costs_two_jobs_whatever_the_number_of_tenants(
    seed: Seed, gateway: BigQueryGateway, tenants: int
) -> None:
    for i in range(tenants):
        seed.usage_row(seed.tenant(f"t_{i:03d}"), runs=i % 7)
    seed.save()

    with gateway.count_jobs() as counter:
        board = quota_dashboard(day=DAY, limit=10)

    assert counter.jobs == 2
    assert board.total == tenants
    assert len(board.rows) == min(tenants, 10)


# --- trend ------------------------------------------------------------------------------------------
def test_it_gives_one_zero_filled_day_per_day_oldest_first(seed: Seed, gateway: BigQueryGateway) -> None:
    tenant = seed.tenant("trending")
    seed.usage_row(tenant, DAY, runs=5)
    seed.usage_row(tenant, DAY - timedelta(days=2), runs=2, daily_limit=4)
    # Two rows for one day (no unique constraint): the last written one counts.
    seed.usage_row(tenant, DAY - timedelta(days=3), runs=1, written=NOON - timedelta(days=3, hours=2))
    seed.usage_row(tenant, DAY - timedelta(days=3), runs=3, written=NOON - timedelta(days=3))
    seed.usage_row(tenant, DAY - timedelta(days=30), runs=6)  # outside the 30 days
    seed.save()

    with gateway.count_jobs() as counter:
        trend = usage_trend(tenant_id=tenant, days=30, until=DAY)

    assert counter.jobs == 1
    assert len(trend.days) == 30
    assert (trend.days[0].day, trend.days[-1].day) == (DAY - timedelta(days=29), DAY)
    runs = {day.day: day.runs for day in trend.days}
    assert runs[DAY] == 5
    assert runs[DAY - timedelta(days=2)] == 2
    assert runs[DAY - timedelta(days=3)] == 3
    assert sum(runs.values()) == 10
    assert trend.days[-3].daily_limit == 4
    assert trend.days[-2].daily_limit is None  # no row that day
    assert (trend.days[-2].recorded, trend.days[-1].recorded) == (False, True)
    assert (trend.plan, trend.daily_limit, trend.company_name) == (PlanName.STARTER, 6, "trending Ltd")
    assert trend.total_runs == 10
    assert trend.peak.day == DAY
    assert trend.days_over_threshold == 1  # 5 of 6; 2 of 4 and 3 of 6 are not


def test_it_gives_a_tenant_without_usage_or_subscription_an_all_zero_trend(seed: Seed) -> None:
    tenant = seed.tenant("newcomer", subscribed=False)
    seed.save()

    trend = usage_trend(tenant_id=tenant, days=7, until=DAY)

    assert [day.runs for day in trend.days] == [0] * 7
    assert (trend.daily_limit, trend.plan) == (None, PlanName.STARTER)


def test_it_says_an_unknown_tenant_does_not_exist(seed: Seed) -> None:
    with pytest.raises(DoesNotExist):
        usage_trend(tenant_id="nobody_here", until=DAY)


@pytest.mark.parametrize("days", [0, 367])
def test_it_refuses_a_trend_period_out_of_range(days: int) -> None:
    with pytest.raises(ValidationFailed) as failure:
        usage_trend(tenant_id="anyone", days=days)

    assert "days" in failure.value.errors
