"""Pipeline-run quotas for one run: admit it against the day's, month's and concurrent limits, release it.

The rules and statements are the batched ones (quota_batches.py) with a batch of one, so what counts
against which limit and the compare-and-set are written once: admission is ONE conditional UPDATE on
the tenant's usage row of the day that increments the counters only where every limit still has room,
so the check and the increment cannot be separated by another writer: with N concurrent admissions for
the last K slots exactly K statements match a row. No read-then-write: the reads around it only report
figures, refuse a row already full, or tell a full row from a missing one. The day's rows and their
carry-over between days are in usage_rows.py.

A run belongs to the day it was admitted on (`Admission.usage_date`): its success or failure counts on that
day's row even when it finishes after midnight, so each day's `run = succeeded + failed (+ released without
outcome)` adds up. Its concurrent slot is released on that row AND on every later row of the tenant (which
counted it), never below 0.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from django.utils import timezone
from google.cloud import bigquery

from tenants_app.models import TenantProfile, TenantSubscription, TenantUsageQuota
from tenants_app.repositories import central_repository
from tenants_app.services.api_key_verification import bigquery_errors_translated
from tenants_app.services.errors import DoesNotExist, ServiceUnavailable
from tenants_app.services.onboarding import usage_id_for
from tenants_app.services.plans import OPERATION_RUN
from tenants_app.services.quota_batches import Release, quota_admit_many, quota_release_many, quota_room
from tenants_app.services.quota_rules import DAILY, MONTHLY, at_warning, check_allowed, quota_day
from tenants_app.services.subscription_selectors import EffectiveLimits, subscription_effective_limits
from tenants_app.services.usage_rows import usage_rows_start

logger = logging.getLogger(__name__)

_ADMIT_ATTEMPTS = 4


@dataclass(frozen=True)
class Admission:
    """One admitted run: the usage row holding its concurrent slot and the figures after admission."""

    tenant_id: str
    usage_date: date
    pipelines_run_today: int
    pipelines_run_month: int
    concurrent_pipelines_running: int
    daily_limit: int
    monthly_limit: int
    concurrent_limit: int
    # Limits whose 80% warning this admission set ("daily", "monthly"); empty almost always.
    warnings_raised: tuple[str, ...] = ()


def subscription_require_active(
    *, tenant_id: str, operation: str = OPERATION_RUN, today: date | None = None
) -> TenantSubscription:
    """The tenant's subscription if its state allows `operation` (one job).

    Raises DoesNotExist (no tenant or subscription), TenantNotActive (suspended or offboarded tenant)
    or SubscriptionInactive (see `plans.LIFECYCLE_RULES`; a trial past its end counts as EXPIRED).
    """
    with bigquery_errors_translated():
        subscription, tenant_status, _ = _admission_context(tenant_id, None)
    check_allowed(tenant_id, subscription, tenant_status, operation, today or quota_day())
    return subscription


def quota_admit(*, tenant_id: str, now: datetime | None = None) -> Admission:
    """Reserve one run for the tenant (one conditional UPDATE), or QuotaExceeded / SubscriptionInactive.

    Two jobs when it admits: one read (subscription, tenant status, the day's row) and the UPDATE. The
    figures returned are the row as read just before plus this run: exact unless other admissions or
    releases of the same tenant ran in between, which only the UPDATE's conditions must get right.
    """
    now = now or timezone.now()
    day = quota_day(now)
    with bigquery_errors_translated():
        subscription, tenant_status, row = _admission_context(tenant_id, day)
        check_allowed(tenant_id, subscription, tenant_status, OPERATION_RUN, day)
        limits = subscription_effective_limits(subscription=subscription)
        for _ in range(_ADMIT_ATTEMPTS):
            if row is None:
                # First run of the day before the rollover made the row: create it (insert-if-absent,
                # so concurrent first runs create it once) and read what it carried over.
                usage_rows_start(day=day, tenant_id=tenant_id)
                row = _usage_row(tenant_id, day)
                continue
            room = quota_room(tenant_id=tenant_id, limits=limits, row=row, now=now)
            if room.refusal is not None:
                raise room.refusal
            admission_id = f"adm_{uuid.uuid4().hex}"
            if quota_admit_many(
                grants={tenant_id: 1}, rooms={tenant_id: room}, now=now, admission_id=admission_id
            ):
                return _admission(row, limits)
            # Another writer took the room between our read and the UPDATE: read again, then either
            # refuse with the fresh figures or, if a run ended meanwhile, try again.
            row = _usage_row(tenant_id, day)
        raise ServiceUnavailable("Could not reserve a run under contention; retry shortly.")


def quota_release(*, tenant_id: str, usage_date: date, succeeded: bool | None) -> None:
    """Free the run's concurrent slot and count its outcome on the day it was admitted (one UPDATE).

    The caller guarantees once per run through its own state change (RUNNING -> anything): a second
    call would count the outcome twice. The slot counter is still clamped at 0 on every row.
    """
    release = Release(tenant_id=tenant_id, usage_date=usage_date, succeeded=succeeded)
    with bigquery_errors_translated():
        changed = quota_release_many(releases=[release])
    if changed == 0:
        # Past retention, or never created (a run admitted by another system): nothing to release.
        logger.warning("no usage row of tenant %s on or after %s to release a run on", tenant_id, usage_date)


def quota_release_if_leaked(*, tenant_id: str, usage_date: date, succeeded: bool | None) -> bool:
    """Release a finished run's slot if the usage row counts more running runs than the queue holds.

    For the repeat of a worker report whose first attempt moved the queue entry out of RUNNING but
    failed before its release landed (BigQuery went away between the two statements): the entry
    cannot tell whether the release happened, the counts can. The comparison is the UPDATE's own
    condition, not a read before it, so two repeats racing release (and count the outcome) once.
    Every RUNNING entry counts, with `usage_date` or not: a claim between its compare-and-set and
    recording its admission is RUNNING already, so its slot is never taken for a leaked one. The price
    is the other way round: while such a claim is in flight a leaked slot may stay until a later
    repeat, a reap or the next rollover, never freed while in use.
    """
    release = Release(tenant_id=tenant_id, usage_date=usage_date, succeeded=succeeded)
    with bigquery_errors_translated():
        if quota_release_many(releases=[release], only_if_leaked=True) == 0:
            return False
    logger.warning("tenant %s: released the slot of a run whose first report failed mid-way", tenant_id)
    return True


# --- internals --------------------------------------------------------------------------------------
def _admission_context(
    tenant_id: str, day: date | None
) -> tuple[TenantSubscription, str | None, TenantUsageQuota | None]:
    """Newest subscription, profile status and (with `day`) that day's usage row: one query."""
    repository = central_repository(TenantSubscription)
    usage = central_repository(TenantUsageQuota)
    profiles = central_repository(TenantProfile).table
    columns = [f"s.`{column.name}`" for column in repository.definition.columns]
    params: list[Any] = [bigquery.ScalarQueryParameter("tenant_id", "STRING", tenant_id)]
    join = ""
    if day is not None:
        columns += [f"u.`{column.name}` AS `u__{column.name}`" for column in usage.definition.columns]
        # The equality on tenant_id keeps it a valid BigQuery LEFT JOIN (it wants a field from each side).
        join = f" LEFT JOIN {usage.table} AS u ON u.tenant_id = s.tenant_id AND u.usage_id = @usage_id"
        params.append(bigquery.ScalarQueryParameter("usage_id", "STRING", usage_id_for(tenant_id, day)))
    sql = (
        f"SELECT {', '.join(columns)}, "
        f"(SELECT status FROM {profiles} WHERE tenant_id = @tenant_id LIMIT 1) AS _tenant_status "
        f"FROM {repository.table} AS s{join} WHERE s.tenant_id = @tenant_id "
        "ORDER BY s.created_at DESC, s.subscription_id LIMIT 1"
    )
    rows = repository.gateway.query(sql, params).rows
    if not rows:
        raise DoesNotExist(f"tenant {tenant_id!r} has no subscription")
    found = rows[0]
    subscription = TenantSubscription(
        **{column.name: found.get(column.name) for column in repository.definition.columns}
    )
    row = None
    if day is not None and found.get("u__usage_id") is not None:
        row = TenantUsageQuota(
            **{column.name: found.get(f"u__{column.name}") for column in usage.definition.columns}
        )
    return subscription, found.get("_tenant_status"), row


def _usage_row(tenant_id: str, day: date) -> TenantUsageQuota | None:
    return central_repository(TenantUsageQuota).find(usage_id_for(tenant_id, day))


def _admission(before: TenantUsageQuota, limits: EffectiveLimits) -> Admission:
    """The admission's figures: the row as read before the UPDATE, plus this run."""
    run_today, run_month = before.pipelines_run_today + 1, before.pipelines_run_month + 1
    raised = []
    # The same test as the UPDATE's: this run crossed 80% if the flag was empty and now qualifies.
    if before.daily_warning_at is None and at_warning(used=run_today, limit=limits.daily_limit):
        raised.append(DAILY)
    if before.monthly_warning_at is None and at_warning(used=run_month, limit=limits.monthly_limit):
        raised.append(MONTHLY)
    if raised:
        logger.info("tenant %s reached 80%% of its %s run limit", before.tenant_id, " and ".join(raised))
    return Admission(
        tenant_id=before.tenant_id,
        usage_date=before.usage_date,
        pipelines_run_today=run_today,
        pipelines_run_month=run_month,
        concurrent_pipelines_running=before.concurrent_pipelines_running + 1,
        daily_limit=limits.daily_limit,
        monthly_limit=limits.monthly_limit,
        concurrent_limit=limits.concurrent_limit,
        warnings_raised=tuple(raised),
    )
