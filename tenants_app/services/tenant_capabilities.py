"""What a tenant can do now: one verdict from its tenant status and its subscription's status.

The tenant's status decides whether it works at all: a suspended or offboarded tenant's API keys are
refused and nothing of it runs or changes, whatever its subscription says. For a working tenant the
subscription's effective status (a TRIAL past its end counts as EXPIRED) decides what is left, by
`plans.LIFECYCLE_RULES`. The portal's banner and tenant list and the API's `allowed_operations` all
come from `tenant_capabilities`, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date

from django.utils import timezone

from tenants_app.labels import enum_label
from tenants_app.models import (
    WORKING_TENANT_STATUSES,
    SubscriptionStatus,
    TenantProfile,
    TenantStatus,
    TenantSubscription,
)
from tenants_app.services.api_key_verification import bigquery_errors_translated
from tenants_app.services.plans import (
    OPERATION_CONFIGURE,
    OPERATION_READ,
    OPERATION_RUN,
    OPERATIONS,
    status_allows,
)
from tenants_app.services.subscription_selectors import subscription_effective_status, subscriptions_newest

OK = "ok"
LIMITED = "limited"
BLOCKED = "blocked"
LEVEL_LABELS = {OK: "OK", LIMITED: "Limited", BLOCKED: "Blocked"}
OPERATION_LABELS = {
    OPERATION_READ: "Read its data",
    OPERATION_RUN: "Run pipelines",
    OPERATION_CONFIGURE: "Set up pipelines and credentials",
}
_TENANT_PREFIXES = {
    TenantStatus.SUSPENDED: "Suspended",
    TenantStatus.CANCELLED: "Offboarded (cancelled)",
    TenantStatus.DELETED: "Offboarded (deleted)",
}
_SUBSCRIPTION_PREFIXES = {
    SubscriptionStatus.ACTIVE: "Active",
    SubscriptionStatus.PAST_DUE: "Payment past due",
    SubscriptionStatus.SUSPENDED: "Subscription suspended",
    SubscriptionStatus.EXPIRED: "Subscription expired",
    SubscriptionStatus.CANCELLED: "Subscription cancelled",
}


@dataclass(frozen=True)
class Capabilities:
    """The verdict: a level (ok, limited, blocked), a one-line headline, and what is allowed."""

    level: str
    headline: str
    allowed_operations: tuple[str, ...]
    keys_accepted: bool
    tenant_status: str
    # The subscription's status as it applies today; None without a subscription.
    subscription_status: str | None

    @property
    def level_label(self) -> str:
        return LEVEL_LABELS[self.level]

    @property
    def operations(self) -> list[tuple[str, str, bool]]:
        """(operation, label, allowed) of every operation, in catalogue order."""
        return [(op, OPERATION_LABELS[op], op in self.allowed_operations) for op in OPERATIONS]


def tenant_capabilities(
    *, profile: TenantProfile, subscription: TenantSubscription | None, today: date | None = None
) -> Capabilities:
    """The verdict for `profile` under its newest `subscription` (None: it has none) on `today` (UTC)."""
    today = today or timezone.now().astimezone(UTC).date()
    status = subscription_effective_status(subscription=subscription, today=today) if subscription else None
    working = profile.status in WORKING_TENANT_STATUSES
    # Reading is never taken away (by staff, and keys stay revocable), so a tenant always has it.
    allowed = tuple(
        op
        for op in OPERATIONS
        if op == OPERATION_READ or (working and status is not None and status_allows(status, op))
    )
    if OPERATION_RUN not in allowed:
        level = BLOCKED
    elif len(allowed) < len(OPERATIONS):
        level = LIMITED
    else:
        level = OK
    return Capabilities(
        level=level,
        headline=f"{_prefix(profile, subscription, status, today)}: {_consequences(allowed, working)}",
        allowed_operations=allowed,
        keys_accepted=working,
        tenant_status=profile.status,
        subscription_status=status,
    )


def tenant_capabilities_for(
    *, profiles: Sequence[TenantProfile], today: date | None = None
) -> dict[str, Capabilities]:
    """The verdict of each profile by tenant id, with their newest subscriptions read in one job."""
    with bigquery_errors_translated():
        newest = subscriptions_newest(tenant_ids=[profile.tenant_id for profile in profiles])
    return {
        profile.tenant_id: tenant_capabilities(
            profile=profile, subscription=newest.get(profile.tenant_id), today=today
        )
        for profile in profiles
    }


def _prefix(
    profile: TenantProfile, subscription: TenantSubscription | None, status: str | None, today: date
) -> str:
    """What decides the verdict: the tenant's own status first, then its subscription's."""
    if profile.status not in WORKING_TENANT_STATUSES:
        return _TENANT_PREFIXES.get(profile.status, enum_label(profile.status))
    if subscription is None or status is None:
        return "No subscription"
    ends = subscription.trial_end_date
    if status == SubscriptionStatus.TRIAL:
        return f"Trial ends {ends.isoformat()}" if ends else "Trial"
    if status == SubscriptionStatus.EXPIRED and subscription.status == SubscriptionStatus.TRIAL and ends:
        return f"Trial ended {ends.isoformat()}"
    return _SUBSCRIPTION_PREFIXES.get(status, enum_label(status))


def _consequences(allowed: tuple[str, ...], keys_accepted: bool) -> str:
    if len(allowed) == len(OPERATIONS):
        return "everything allowed"
    parts = []
    if not keys_accepted:
        parts.append("API keys refused")
    elif allowed == (OPERATION_READ,):
        parts.append("read only")
    if OPERATION_RUN not in allowed:
        # Every state without runs is read only too: the banner's list says so, the line stays short.
        parts.append("no pipeline runs")
    else:
        parts += ["pipelines keep running", "no new pipelines or credentials"]
    return ", ".join(parts)
