"""Periodic work without cron: the scheduler, orphan cleanup, reports' rows, usage rollover, notifications.

`periodic_tick(now=...)` runs every job of `PERIODIC_JOBS` whose current period has not run yet;
`manage.py run_periodic` calls it every few seconds (or once, from Cloud Scheduler or a CronJob).

Safe on several hosts at once, in two layers:

1. The services are idempotent and safe concurrently on their own, so a period run twice (two hosts, a
   marker lost with a cache restart, a host stalled past its lease) costs BigQuery jobs, never a wrong
   result: `scheduler_run` claims configs with a compare-and-set MERGE and enqueues deterministic run ids
   insert-if-absent, so each slot is enqueued once whoever runs it; `runs_reap_orphaned` re-queues with
   conditional UPDATEs and releases each slot once; `usage_roll_over` expires trials with a conditional
   UPDATE, creates rows insert-if-absent and deletes only what is past retention.
2. A "once per period" marker in the default cache (machine-wide by default, cluster-wide with Redis)
   saves that work: the host whose `cache.add` of the period's key wins runs the job, the others skip it.
   The marker is a lease while the job runs (so a host that dies mid-job does not lose the period for
   long: another host runs it once the lease ends), becomes "done" for the rest of the period on
   success, and is deleted on failure so that the next tick, on any host, retries.

Periods are aligned to the epoch (UTC): a job every 60 s runs in the first tick of each minute, right
after the minute's cron slots fall due; a daily job runs in the first tick of each UTC day.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.cache import cache

from bigquery_backend.repository import Part
from tenants_app.services.notifications import notifications_daily_scan, notifications_deliver
from tenants_app.services.quota_rules import quota_day
from tenants_app.services.run_queue import runs_reap_orphaned
from tenants_app.services.run_tenant_rows import TenantRowsReport, tenant_rows_flush
from tenants_app.services.scheduler import scheduler_run
from tenants_app.services.usage_rows import usage_roll_over

logger = logging.getLogger(__name__)

DAY_SECONDS = 86_400
# A "done" marker outlives its period by this much: a host whose clock is a little behind still sees it.
_CLOCK_SKEW_SECONDS = 60
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

RAN, SKIPPED, FAILED = "ran", "skipped", "failed"


@dataclass(frozen=True)
class PeriodicJob:
    """A job run once per period: `period_seconds` reads the settings at each tick (tests change them)."""

    name: str
    period_seconds: Callable[[], int]
    run: Callable[[datetime], str]  # does the work at `now`; returns a one-line summary (no secrets)


def _schedule(now: datetime) -> str:
    report = scheduler_run(now=now)
    return f"{report.runs_enqueued} run(s) enqueued for {report.configs_claimed} config(s)"


def _reap_orphans(now: datetime) -> str:
    report = runs_reap_orphaned(now=now)
    return f"{len(report.requeued)} orphaned run(s) re-queued, {len(report.failed)} failed"


def _tenant_rows_seconds() -> int:
    # Settings check that the parts divide the period; tests that override them get a sane slice anyway.
    return max(1, settings.PERIODIC_TENANT_ROWS_SECONDS // max(1, settings.PERIODIC_TENANT_ROWS_PARTS))


def _write_tenant_rows(now: datetime) -> str:
    """The parts of the tenants whose slices of the period came round: each part once per period.

    Normally one, this slice's. The loop's ticks drift (a tick is its jobs' time plus the sleep), and a
    failed flush is retried at a later tick: so the slices since the last one flushed (kept in the cache)
    are caught up too, at most a period's worth, and a part never waits a second period.
    """
    parts, seconds = max(1, settings.PERIODIC_TENANT_ROWS_PARTS), _tenant_rows_seconds()
    current = period_number(now, seconds)
    cursor = f"periodic:write_tenant_rows:{seconds}:{parts}:last-slice"
    last = _cache_get(cursor)
    first = current if not isinstance(last, int) else max(last + 1, current - parts + 1)
    total = TenantRowsReport()
    for number in range(first, current + 1):
        total.add(tenant_rows_flush(part=Part(number % parts, of=parts)))
        _cache_set(cursor, number, timeout=2 * seconds * parts)
    failed = (
        f", {len(total.failed_tenants)} tenant(s) kept for the next period" if total.failed_tenants else ""
    )
    left = ", more left for the next period" if total.more_left else ""
    slices = f" ({current + 1 - first} parts caught up)" if current + 1 - first > 1 else ""
    return (
        f"{total.attempts} run attempt(s) written to {total.tenants} tenant dataset(s){failed}{left}{slices}"
    )


def _roll_over_usage(now: datetime) -> str:
    report = usage_roll_over(day=quota_day(now))
    return (
        f"usage of {report.day}: {report.rows_created} row(s) created, "
        f"{len(report.trials_expired)} trial(s) expired, {report.rows_deleted} old row(s) deleted"
    )


def _deliver_notifications(now: datetime) -> str:
    return notifications_deliver(now=now).summary()


def _scan_expiring(now: datetime) -> str:
    trials, keys = notifications_daily_scan(now=now)
    return f"{trials} trial(s) ending and {keys} API key(s) expiring notified"


# The one table of periodic work. The rollover is daily: it runs in the first tick after midnight UTC
# (or, for a process started later in the day, in its first tick: runs create a missing row anyway).
PERIODIC_JOBS: tuple[PeriodicJob, ...] = (
    PeriodicJob("schedule_pipelines", lambda: settings.PERIODIC_SCHEDULER_SECONDS, _schedule),
    PeriodicJob("cleanup_orphaned_runs", lambda: settings.PERIODIC_ORPHAN_CLEANUP_SECONDS, _reap_orphans),
    PeriodicJob("write_tenant_rows", _tenant_rows_seconds, _write_tenant_rows),
    PeriodicJob("roll_over_usage", lambda: DAY_SECONDS, _roll_over_usage),
    # Webhooks and emails queued by `notify` go out within a few seconds; retries fall due here too.
    PeriodicJob(
        "deliver_notifications", lambda: settings.PERIODIC_NOTIFICATIONS_SECONDS, _deliver_notifications
    ),
    PeriodicJob("notify_trials_and_keys_expiring", lambda: DAY_SECONDS, _scan_expiring),
)


@dataclass(frozen=True)
class JobOutcome:
    """What one tick did with one job: ran, skipped (its period ran or runs elsewhere) or failed."""

    name: str
    status: str
    period_start: datetime
    summary: str = ""


@dataclass
class TickReport:
    """Every job's outcome in one tick, in table order."""

    now: datetime
    outcomes: list[JobOutcome] = field(default_factory=list)

    @property
    def failed(self) -> list[JobOutcome]:
        return [outcome for outcome in self.outcomes if outcome.status == FAILED]


def periodic_tick(
    *,
    now: datetime,
    jobs: Sequence[PeriodicJob] = PERIODIC_JOBS,
    stopping: Callable[[], bool] = lambda: False,
) -> TickReport:
    """Run every job whose period at `now` has not run yet (on any host sharing the cache).

    A failing job is logged and its marker dropped, and the others still run. `stopping` is asked
    before each job, so a shutdown waits for the job at hand only.
    """
    now = now.astimezone(UTC)
    report = TickReport(now=now)
    for job in jobs:
        if stopping():
            break
        report.outcomes.append(_run_if_due(job, now))
    return report


def period_number(now: datetime, period_seconds: int) -> int:
    """How many whole epoch-aligned periods came before the one holding `now`."""
    return (now - _EPOCH) // timedelta(seconds=period_seconds)


def period_start(now: datetime, period_seconds: int) -> datetime:
    """The start of the epoch-aligned period holding `now` (a daily one starts at midnight UTC)."""
    return _EPOCH + timedelta(seconds=period_number(now, period_seconds) * period_seconds)


def _run_if_due(job: PeriodicJob, now: datetime) -> JobOutcome:
    seconds = job.period_seconds()
    start = period_start(now, seconds)
    key = f"periodic:{job.name}:{seconds}:{start:%Y%m%dT%H%M%SZ}"
    left = math.ceil((start + timedelta(seconds=seconds) - now).total_seconds())
    if not _claim(key, timeout=min(left, settings.PERIODIC_JOB_LEASE_SECONDS)):
        return JobOutcome(job.name, SKIPPED, start)
    try:
        summary = job.run(now)
    except Exception as exc:
        # The class and the message only: none of these services handles secrets, and the log filter
        # masks anything shaped like one; the traceback is there for whoever debugs it.
        logger.error("periodic job %s failed, retried at the next tick: %r", job.name, exc, exc_info=exc)
        _release(key)
        return JobOutcome(job.name, FAILED, start, f"{type(exc).__name__}: {exc}")
    _mark_done(key, timeout=left + _CLOCK_SKEW_SECONDS)
    logger.info("periodic job %s for the period from %s: %s", job.name, start.isoformat(), summary)
    return JobOutcome(job.name, RAN, start, summary)


def _claim(key: str, *, timeout: int) -> bool:
    try:
        return bool(cache.add(key, "running", timeout=max(1, timeout)))
    except Exception:
        # The marker only saves work (see the module doc): without the cache, run rather than skip.
        logger.warning("periodic marker %s unavailable; running the job anyway", key, exc_info=True)
        return True


def _mark_done(key: str, *, timeout: int) -> None:
    try:
        cache.set(key, "done", timeout=max(1, timeout))
    except Exception:
        logger.warning("periodic marker %s not stored; another host may run this period again", key)


def _cache_get(key: str) -> object:
    try:
        return cache.get(key)
    except Exception:
        logger.warning("periodic cursor %s unavailable; only the current slice is flushed", key)
        return None


def _cache_set(key: str, value: object, *, timeout: int) -> None:
    try:
        cache.set(key, value, timeout=timeout)
    except Exception:
        logger.warning("periodic cursor %s not stored; the next slice may flush a part again", key)


def _release(key: str) -> None:
    try:
        cache.delete(key)
    except Exception:
        logger.warning("periodic marker %s not deleted; the job is retried once its lease ends", key)
