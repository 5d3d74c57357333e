"""Plan changes, subscription status transitions and per-tenant limit overrides."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from django.utils import timezone

from bigquery_backend.client import BigQueryGateway
from tenants_app.models import SubscriptionStatus, TenantCloudCredential, TenantProfile, TenantSubscription
from tenants_app.repositories import central_repository
from tenants_app.services.audit import audit_list
from tenants_app.services.errors import QuotaExceeded, SubscriptionCancelled, ValidationFailed
from tenants_app.services.plans import PLANS, TRIAL_DAYS, status_allows
from tenants_app.services.quotas import quota_admit
from tenants_app.services.subscription_overrides import subscription_set_limits
from tenants_app.services.subscription_plan_change import (
    subscription_change_plan,
    subscription_change_plan_preview,
)
from tenants_app.services.subscription_selectors import subscription_effective_limits, subscription_get
from tenants_app.services.subscription_status import subscription_cancel, subscription_set_status
from tenants_app.services.subscriptions import subscription_update
from tests.tenants_app.services.quota_factories import put_usage, tenant_with_subscription, usage

pytestmark = pytest.mark.usefixtures("central")

ACTOR = "user:alice"


def today() -> date:
    return timezone.now().date()


def entries(tenant_id: str, action: str) -> list:
    return audit_list(tenant_id=tenant_id, action=action).items


# --- catalogue and effective limits -------------------------------------------------------------------
def test_it_gives_every_plan_api_call_rates_that_grow_with_the_plan() -> None:
    starter, professional, scale = PLANS["STARTER"], PLANS["PROFESSIONAL"], PLANS["SCALE"]
    assert (starter.daily_limit, starter.monthly_limit, starter.concurrent_limit) == (6, 180, 1)
    assert starter.api_calls_per_minute < professional.api_calls_per_minute < scale.api_calls_per_minute
    assert all(plan.api_calls_per_hour >= plan.api_calls_per_minute for plan in PLANS.values())


def test_it_lets_past_due_tenants_run_but_not_configure_and_others_only_read() -> None:
    assert status_allows("PAST_DUE", "run")
    assert not status_allows("PAST_DUE", "configure")
    for status in ("SUSPENDED", "EXPIRED", "CANCELLED"):
        assert status_allows(status, "read")
        assert not status_allows(status, "run")


def test_it_falls_back_to_the_plan_for_empty_limit_columns() -> None:
    tenant_id = tenant_with_subscription(plan="PROFESSIONAL", api_calls_per_minute=5)

    limits = subscription_effective_limits(tenant_id=tenant_id)

    assert limits.max_providers == PLANS["PROFESSIONAL"].max_providers
    assert limits.api_calls_per_hour == PLANS["PROFESSIONAL"].api_calls_per_hour
    assert limits.api_calls_per_minute == 5
    assert limits.overridden == ("api_calls_per_minute",)


# --- plan change ----------------------------------------------------------------------------------------
def test_it_previews_a_plan_change_with_the_limits_before_and_after() -> None:
    tenant_id = tenant_with_subscription(plan="SCALE")
    put_usage(tenant_id, today(), pipelines_run_today=30, pipelines_run_month=200)

    preview = subscription_change_plan_preview(tenant_id=tenant_id, plan="STARTER")

    assert (preview.current_plan, preview.new_plan) == ("SCALE", "STARTER")
    assert preview.changes["daily_limit"] == (100, 6)
    assert preview.changes["concurrent_limit"] == (10, 1)
    assert preview.limits_after.api_calls_per_minute == PLANS["STARTER"].api_calls_per_minute
    assert any("daily limit of 6" in warning for warning in preview.warnings)
    assert any("monthly limit of 180" in warning for warning in preview.warnings)
    # A preview changes nothing.
    assert subscription_get(tenant_id=tenant_id).plan_name == "SCALE"


def test_it_warns_when_more_providers_are_in_use_than_the_new_plan_allows() -> None:
    tenant_id = tenant_with_subscription(plan="SCALE", max_providers=8)
    for index, provider in enumerate(("GCP", "AWS", "AZURE", "OPENAI")):
        central_repository(TenantCloudCredential).insert(
            TenantCloudCredential(
                credential_id=f"{tenant_id}_{index}",
                tenant_id=tenant_id,
                provider=provider,
                encrypted_credentials=b"x",
                is_active=True,
            )
        )

    preview = subscription_change_plan_preview(tenant_id=tenant_id, plan="STARTER")

    assert any("4 providers" in warning for warning in preview.warnings)
    assert any("overrides" in warning for warning in preview.warnings)


def test_it_changes_the_plan_limits_today_s_usage_row_and_the_profile_at_once() -> None:
    tenant_id = tenant_with_subscription(plan="STARTER", api_calls_per_minute=7)
    put_usage(tenant_id, today(), pipelines_run_today=6, pipelines_run_month=6)

    subscription = subscription_change_plan(tenant_id=tenant_id, plan="PROFESSIONAL", actor=ACTOR)

    assert subscription.plan_name == "PROFESSIONAL"
    stored = subscription_get(tenant_id=tenant_id)
    assert (stored.daily_limit, stored.monthly_limit, stored.concurrent_limit) == (25, 750, 3)
    assert stored.max_pipelines_per_day == 25
    assert stored.api_calls_per_minute is None  # the override went with the old plan
    row = usage(tenant_id, today())
    assert row is not None
    assert (row.daily_limit, row.monthly_limit, row.concurrent_limit) == (25, 750, 3)
    assert central_repository(TenantProfile).get(tenant_id).subscription_plan == "PROFESSIONAL"
    # The day's 7th run, refused on STARTER, is admitted at once.
    assert quota_admit(tenant_id=tenant_id).pipelines_run_today == 7
    [entry] = entries(tenant_id, "subscription.plan_change")
    assert entry.actor == ACTOR
    assert entry.before_values["plan_name"] == "STARTER"
    assert entry.after_values == {
        "plan_name": "PROFESSIONAL",
        "daily_limit": 25,
        "monthly_limit": 750,
        "concurrent_limit": 3,
        "api_calls_per_minute": None,
        "max_pipelines_per_day": 25,
    }


def test_it_refuses_runs_at_once_after_a_downgrade() -> None:
    tenant_id = tenant_with_subscription(plan="SCALE")
    put_usage(tenant_id, today(), pipelines_run_today=6, pipelines_run_month=6)

    subscription_change_plan(tenant_id=tenant_id, plan="STARTER", actor=ACTOR)

    with pytest.raises(QuotaExceeded) as caught:
        quota_admit(tenant_id=tenant_id)
    assert caught.value.limit == "daily"


def test_it_treats_the_same_plan_change_again_as_done_without_a_second_audit_entry() -> None:
    tenant_id = tenant_with_subscription(plan="STARTER")

    subscription_change_plan(tenant_id=tenant_id, plan="SCALE", actor=ACTOR)
    again = subscription_change_plan(tenant_id=tenant_id, plan="SCALE", actor=ACTOR)

    assert again.daily_limit == 100
    assert len(entries(tenant_id, "subscription.plan_change")) == 1


def test_it_refuses_an_unknown_plan_and_a_cancelled_subscription() -> None:
    tenant_id = tenant_with_subscription(status=SubscriptionStatus.CANCELLED)

    with pytest.raises(ValidationFailed) as unknown:
        subscription_change_plan(tenant_id=tenant_id, plan="GOLD", actor=ACTOR)
    assert "plan" in unknown.value.errors
    with pytest.raises(SubscriptionCancelled):
        subscription_change_plan(tenant_id=tenant_id, plan="SCALE", actor=ACTOR)


# --- status ---------------------------------------------------------------------------------------------
def test_it_moves_along_allowed_transitions_and_records_each() -> None:
    tenant_id = tenant_with_subscription()

    subscription_set_status(tenant_id=tenant_id, status="PAST_DUE", actor=ACTOR)
    subscription_set_status(tenant_id=tenant_id, status="ACTIVE", actor=ACTOR)

    assert subscription_get(tenant_id=tenant_id).status == "ACTIVE"
    changes = [
        (e.before_values["status"], e.after_values["status"])
        for e in entries(tenant_id, "subscription.status_change")
    ]
    assert sorted(changes) == [("ACTIVE", "PAST_DUE"), ("PAST_DUE", "ACTIVE")]


def test_it_refuses_a_transition_that_is_not_allowed_naming_the_allowed_ones() -> None:
    tenant_id = tenant_with_subscription(status=SubscriptionStatus.SUSPENDED)

    with pytest.raises(ValidationFailed) as caught:
        subscription_set_status(tenant_id=tenant_id, status="PAST_DUE", actor=ACTOR)

    assert "ACTIVE, CANCELLED" in caught.value.errors["status"][0]
    assert subscription_get(tenant_id=tenant_id).status == "SUSPENDED"


def test_it_keeps_cancelled_final() -> None:
    tenant_id = tenant_with_subscription()
    cancelled = subscription_set_status(tenant_id=tenant_id, status="CANCELLED", actor=ACTOR)
    assert cancelled.subscription_end_date == today()

    with pytest.raises(SubscriptionCancelled):
        subscription_set_status(tenant_id=tenant_id, status="ACTIVE", actor=ACTOR)


def test_it_cancels_for_an_offboarding_once_and_records_it_once() -> None:
    tenant_id = tenant_with_subscription(status=SubscriptionStatus.PAST_DUE)

    first = subscription_cancel(tenant_id=tenant_id, actor=ACTOR)
    again = subscription_cancel(tenant_id=tenant_id, actor=ACTOR)

    assert first is not None
    assert again is not None
    assert (again.status, again.subscription_end_date) == ("CANCELLED", today())
    recorded = entries(tenant_id, "subscription.status_change")
    assert [(e.actor, e.before_values["status"], e.after_values["status"]) for e in recorded] == [
        (ACTOR, "PAST_DUE", "CANCELLED")
    ]
    assert subscription_cancel(tenant_id="t_never_subscribed", actor=ACTOR) is None


def test_it_records_a_cancellation_whose_answer_was_lost_when_it_is_repeated() -> None:
    tenant_id = tenant_with_subscription()
    # As left by a cancellation whose UPDATE landed while its answer (and so its audit entry) was lost.
    central_repository(TenantSubscription).update_where(
        {"status": SubscriptionStatus.CANCELLED, "updated_at": timezone.now()},
        filters={"tenant_id": tenant_id},
    )

    subscription_cancel(tenant_id=tenant_id, actor=ACTOR)
    subscription_cancel(tenant_id=tenant_id, actor=ACTOR)

    recorded = entries(tenant_id, "subscription.status_change")
    assert [e.after_values for e in recorded] == [{"status": "CANCELLED", "finished_by_retry": True}]


def test_it_starts_a_trial_with_the_default_length_and_extends_it() -> None:
    tenant_id = tenant_with_subscription()

    trial = subscription_set_status(tenant_id=tenant_id, status="TRIAL", actor=ACTOR)
    assert trial.trial_end_date == today() + timedelta(days=TRIAL_DAYS - 1)

    later = today() + timedelta(days=30)
    extended = subscription_set_status(tenant_id=tenant_id, status="TRIAL", actor=ACTOR, trial_end_date=later)
    assert extended.trial_end_date == later
    assert subscription_get(tenant_id=tenant_id).trial_end_date == later
    assert len(entries(tenant_id, "subscription.status_change")) == 2


def test_it_lets_an_expired_trial_be_activated() -> None:
    tenant_id = tenant_with_subscription(
        status=SubscriptionStatus.TRIAL, trial_end_date=today() - timedelta(days=1)
    )

    with pytest.raises(ValidationFailed):
        # Effective status is EXPIRED, which cannot go to PAST_DUE.
        subscription_set_status(tenant_id=tenant_id, status="PAST_DUE", actor=ACTOR)
    active = subscription_set_status(tenant_id=tenant_id, status="ACTIVE", actor=ACTOR)
    assert active.status == "ACTIVE"


def test_it_answers_the_same_status_again_without_change() -> None:
    tenant_id = tenant_with_subscription()

    subscription_set_status(tenant_id=tenant_id, status="ACTIVE", actor=ACTOR)

    assert entries(tenant_id, "subscription.status_change") == []


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"status": "GOLD"}, "status"),
        ({"status": "ACTIVE", "trial_end_date": "2031-01-01"}, "trial_end_date"),
        ({"status": "TRIAL", "trial_end_date": "yesterday"}, "trial_end_date"),
        ({"status": "TRIAL", "trial_end_date": "far"}, "trial_end_date"),
    ],
)
def test_it_names_the_field_of_an_invalid_status_change(kwargs: dict, field: str) -> None:
    tenant_id = tenant_with_subscription()
    values = dict(kwargs)
    if values.get("trial_end_date") == "yesterday":
        values["trial_end_date"] = today() - timedelta(days=1)
    elif values.get("trial_end_date") == "far":
        values["trial_end_date"] = today() + timedelta(days=400)
    elif isinstance(values.get("trial_end_date"), str):
        values["trial_end_date"] = today()

    with pytest.raises(ValidationFailed) as caught:
        subscription_set_status(tenant_id=tenant_id, actor=ACTOR, **values)

    assert field in caught.value.errors


# --- limits ---------------------------------------------------------------------------------------------
def test_it_overrides_limits_for_one_tenant_and_shows_them_on_today_s_row() -> None:
    tenant_id = tenant_with_subscription()
    put_usage(tenant_id, today())

    subscription_set_limits(tenant_id=tenant_id, actor=ACTOR, daily_limit=12, api_calls_per_minute=90)

    limits = subscription_effective_limits(tenant_id=tenant_id)
    assert (limits.daily_limit, limits.api_calls_per_minute) == (12, 90)
    assert set(limits.overridden) == {"daily_limit", "api_calls_per_minute"}
    row = usage(tenant_id, today())
    assert row is not None
    assert row.daily_limit == 12
    [entry] = entries(tenant_id, "subscription.limits_change")
    assert entry.before_values == {"daily_limit": 6, "api_calls_per_minute": None, "max_pipelines_per_day": 6}
    assert entry.after_values == {"daily_limit": 12, "api_calls_per_minute": 90, "max_pipelines_per_day": 12}


def test_it_resets_overrides_to_the_plan() -> None:
    tenant_id = tenant_with_subscription(daily_limit=12, max_providers=1)

    subscription_set_limits(tenant_id=tenant_id, actor=ACTOR, reset=["daily_limit", "max_providers"])

    stored = subscription_get(tenant_id=tenant_id)
    assert (stored.daily_limit, stored.max_providers) == (6, None)
    assert subscription_effective_limits(subscription=stored).overridden == ()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"daily_limit": 0}, "daily_limit"),
        ({"concurrent_limit": 5000}, "concurrent_limit"),
        ({"max_providers": True}, "max_providers"),
        ({"api_calls_per_hour": "many"}, "api_calls_per_hour"),
        ({"daily_limit": 500}, "monthly_limit"),  # above STARTER's monthly 180
        ({"api_calls_per_minute": 5000}, "api_calls_per_hour"),  # above STARTER's hourly 1000
        ({"reset": ["colour"]}, "reset"),
        ({"daily_limit": 3, "reset": ["daily_limit"]}, "daily_limit"),
    ],
)
def test_it_refuses_invalid_limits_naming_the_field(kwargs: dict, field: str) -> None:
    tenant_id = tenant_with_subscription()

    with pytest.raises(ValidationFailed) as caught:
        subscription_set_limits(tenant_id=tenant_id, actor=ACTOR, **kwargs)

    assert field in caught.value.errors
    assert subscription_get(tenant_id=tenant_id).daily_limit == 6


def test_it_records_nothing_when_limits_do_not_change() -> None:
    tenant_id = tenant_with_subscription()

    subscription_set_limits(tenant_id=tenant_id, actor=ACTOR, daily_limit=6)

    assert entries(tenant_id, "subscription.limits_change") == []


# --- several changes at once --------------------------------------------------------------------------
def test_it_checks_a_whole_update_before_its_first_write(gateway: BigQueryGateway) -> None:
    tenant_id = tenant_with_subscription(plan="SCALE")

    with gateway.count_jobs() as refused, pytest.raises(ValidationFailed) as caught:
        subscription_update(
            tenant_id=tenant_id,
            actor=ACTOR,
            plan="STARTER",
            status=SubscriptionStatus.EXPIRED,  # not allowed from ACTIVE
            limits={"daily_limit": 500},  # above STARTER's 180 a month
        )

    assert set(caught.value.errors) == {"status", "monthly_limit"}
    assert refused.jobs == 1  # the one read: nothing written
    stored = subscription_get(tenant_id=tenant_id)
    assert (stored.plan_name, stored.status, stored.daily_limit) == ("SCALE", "ACTIVE", 100)
    assert audit_list(tenant_id=tenant_id).items == []


def test_it_resets_limits_to_the_new_plans_figures_in_one_update() -> None:
    tenant_id = tenant_with_subscription(plan="STARTER", daily_limit=3)

    updated = subscription_update(
        tenant_id=tenant_id,
        actor=ACTOR,
        plan="PROFESSIONAL",
        limits={"concurrent_limit": 5},
        reset=["daily_limit"],
    )

    stored = subscription_get(tenant_id=tenant_id)
    assert (stored.plan_name, stored.daily_limit, stored.concurrent_limit) == ("PROFESSIONAL", 25, 5)
    assert subscription_effective_limits(subscription=updated).overridden == ("concurrent_limit",)
