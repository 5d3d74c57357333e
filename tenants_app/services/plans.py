"""The plan catalogue and the subscription lifecycle rules, in one place.

Every limit a subscription starts with comes from here. A subscription copies the pipeline-run limits
(`daily_limit`, `monthly_limit`, `concurrent_limit`) when it starts or changes plan; staff may then
override them per tenant. The provider and API-call limits are copied only when overridden: an empty
column means "the plan's figure", so changing the catalogue reaches every tenant without an override.
"""

from __future__ import annotations

from dataclasses import dataclass

from tenants_app.models import PlanName, SubscriptionStatus
from tenants_app.services.errors import ValidationFailed


@dataclass(frozen=True)
class Plan:
    """One plan's limits, as sold (the original system's pipeline figures, plus API-call rates)."""

    name: str
    team_members: int
    max_providers: int
    daily_limit: int
    monthly_limit: int
    concurrent_limit: int
    price_usd_per_month: int | None
    api_calls_per_minute: int
    api_calls_per_hour: int


PLANS: dict[str, Plan] = {
    PlanName.STARTER: Plan(PlanName.STARTER, 2, 3, 6, 180, 1, 19, 60, 1_000),
    # Unpriced in the original system: sold by quote.
    PlanName.PROFESSIONAL: Plan(PlanName.PROFESSIONAL, 6, 6, 25, 750, 3, None, 300, 10_000),
    PlanName.SCALE: Plan(PlanName.SCALE, 11, 10, 100, 3000, 10, 199, 1_000, 50_000),
}

# A trial lasts this long unless staff give an end date; `trial_end_date` is its last day (inclusive).
TRIAL_DAYS = 14

# What a tenant may still do in each subscription state. Reading (its profile, keys, usage, runs) is
# always allowed, and so is key management (revoking a leaked key must never depend on billing).
OPERATION_READ = "read"
OPERATION_RUN = "run"  # pipeline runs: admission at claim time, scheduling, run-now
OPERATION_CONFIGURE = "configure"  # new or changed pipeline configs and cloud credentials
OPERATIONS = (OPERATION_READ, OPERATION_RUN, OPERATION_CONFIGURE)

LIFECYCLE_RULES: dict[str, frozenset[str]] = {
    SubscriptionStatus.TRIAL: frozenset(OPERATIONS),  # until trial_end_date, then it counts as EXPIRED
    SubscriptionStatus.ACTIVE: frozenset(OPERATIONS),
    # Grace while billing is sorted out: pipelines keep running, nothing new is set up.
    SubscriptionStatus.PAST_DUE: frozenset({OPERATION_READ, OPERATION_RUN}),
    SubscriptionStatus.SUSPENDED: frozenset({OPERATION_READ}),
    SubscriptionStatus.EXPIRED: frozenset({OPERATION_READ}),
    SubscriptionStatus.CANCELLED: frozenset({OPERATION_READ}),
}

# Status changes staff may make; anything else is a 400 naming the allowed targets. CANCELLED is final
# (like an offboarded tenant): a returning customer is onboarded again.
STATUS_TRANSITIONS: dict[str, frozenset[str]] = {
    SubscriptionStatus.TRIAL: frozenset(
        {
            SubscriptionStatus.ACTIVE,
            SubscriptionStatus.EXPIRED,
            SubscriptionStatus.SUSPENDED,
            SubscriptionStatus.CANCELLED,
        }
    ),
    SubscriptionStatus.ACTIVE: frozenset(
        {
            SubscriptionStatus.TRIAL,
            SubscriptionStatus.PAST_DUE,
            SubscriptionStatus.SUSPENDED,
            SubscriptionStatus.CANCELLED,
        }
    ),
    SubscriptionStatus.PAST_DUE: frozenset(
        {SubscriptionStatus.ACTIVE, SubscriptionStatus.SUSPENDED, SubscriptionStatus.CANCELLED}
    ),
    SubscriptionStatus.SUSPENDED: frozenset({SubscriptionStatus.ACTIVE, SubscriptionStatus.CANCELLED}),
    SubscriptionStatus.EXPIRED: frozenset(
        {SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIAL, SubscriptionStatus.CANCELLED}
    ),
    SubscriptionStatus.CANCELLED: frozenset(),
}


def plan_get(name: str) -> Plan:
    """The plan called `name`, or ValidationFailed listing the plans that exist."""
    try:
        return PLANS[name]
    except KeyError:
        reason = f"Choose one of {', '.join(PLANS)}."
        raise ValidationFailed(f"unknown plan {name!r}", errors={"plan": [reason]}) from None


def status_allows(status: str, operation: str) -> bool:
    """Whether a subscription in `status` (already trial-adjusted) allows `operation`."""
    if operation not in OPERATIONS:
        raise ValueError(f"unknown operation {operation!r}")
    return operation in LIFECYCLE_RULES.get(status, frozenset())


def statuses_allowing(operation: str) -> tuple[str, ...]:
    """Every subscription status that allows `operation`, in declaration order."""
    return tuple(status for status in LIFECYCLE_RULES if status_allows(status, operation))
