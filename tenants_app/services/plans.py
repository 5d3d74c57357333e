"""The plan catalogue, in one place: every limit a subscription starts with."""

from __future__ import annotations

from dataclasses import dataclass

from tenants_app.models import PlanName
from tenants_app.services.errors import ValidationFailed


@dataclass(frozen=True)
class Plan:
    """One plan's limits, as sold (the original system's figures)."""

    name: str
    team_members: int
    max_providers: int
    daily_limit: int
    monthly_limit: int
    concurrent_limit: int
    price_usd_per_month: int | None


PLANS: dict[str, Plan] = {
    PlanName.STARTER: Plan(PlanName.STARTER, 2, 3, 6, 180, 1, 19),
    # Unpriced in the original system: sold by quote.
    PlanName.PROFESSIONAL: Plan(PlanName.PROFESSIONAL, 6, 6, 25, 750, 3, None),
    PlanName.SCALE: Plan(PlanName.SCALE, 11, 10, 100, 3000, 10, 199),
}


def plan_get(name: str) -> Plan:
    """The plan called `name`, or ValidationFailed listing the plans that exist."""
    try:
        return PLANS[name]
    except KeyError:
        reason = f"Choose one of {', '.join(PLANS)}."
        raise ValidationFailed(f"unknown plan {name!r}", errors={"plan": [reason]}) from None
