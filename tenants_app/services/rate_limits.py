"""API-call rate limits per tenant (per minute and per hour), counted in Django's cache, never in BigQuery.

Windows are fixed: calendar minutes and hours (UTC epoch), one counter each per tenant, so a client
learns exactly when a window reopens (`Retry-After`). The price of fixed windows is that a burst at a
window's edge can reach twice the limit over a few seconds; the hourly window bounds it. Refused calls
are not counted, so a client that backs off is not punished for the calls it was refused.

Counts are shared by every process of the machine with the default cache (diskcache, whose increments are
atomic across processes), and cluster-wide with a shared Redis cache (`CACHE_URL`).

Admitted calls are also added to the day's usage row (`total_api_calls_today`). That is batched:
pending counts wait in the cache and one UPDATE for every tenant writes them, when
API_CALLS_FLUSH_SECONDS passed since the first unwritten call or API_CALLS_FLUSH_COUNT calls wait, and
when a gunicorn worker exits. A flush reads a pending count and takes it with one atomic decrement
by that amount; if another flush (a thread, or a process sharing Redis) took some of it in between,
the counter goes below zero and the shortfall is given back, so a call is written once, never twice;
a failed write puts the counts back.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime

from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.core.cache.backends.base import BaseCache

from bigquery_backend.exceptions import BigQueryError
from tenants_app.services.api_key_verification import bigquery_errors_translated
from tenants_app.services.errors import RateLimited, ServiceError
from tenants_app.services.subscription_selectors import EffectiveLimits, subscription_limits_cached
from tenants_app.services.usage_rows import usage_add_api_calls

logger = logging.getLogger(__name__)

MINUTE = "minute"
HOUR = "hour"
_WINDOWS = ((MINUTE, 60), (HOUR, 3600))
_PREFIX = "cvg:rate:v1:"
_PENDING_TTL = 3 * 86_400  # pending counts outlive a day boundary and a long outage
_FALLBACK_TTL = 5.0  # limits unknown (BigQuery down): allow, and ask again this much later


@dataclass(frozen=True)
class RateDecision:
    """An admitted call: the counts in each window after it, and the limits that apply."""

    tenant_id: str
    minute_count: int
    hour_count: int
    limits: EffectiveLimits | None


def rate_limit_check(*, tenant_id: str, now: float | None = None) -> RateDecision:
    """Count one API call of the tenant, or raise RateLimited (429) when a window is full.

    Six cache operations on an admitted call (the outage note, limits with their generation, two
    windows, the pending count, the flush counter) and no BigQuery job once the limits are cached.
    """
    now = time.time() if now is None else now
    backend = caches[DEFAULT_CACHE_ALIAS]  # resolved once: the `cache` proxy costs a lookup per use
    limits = _limits(backend, tenant_id)
    if limits is None:
        # Limits unknown for a moment (BigQuery unreachable): let calls through rather than add an
        # outage of our own; the call is still counted for the usage row.
        api_call_recorder.record(tenant_id, now, backend=backend)
        return RateDecision(tenant_id=tenant_id, minute_count=0, hour_count=0, limits=None)
    counted: list[str] = []
    counts: dict[str, int] = {}
    for window, seconds in _WINDOWS:
        allowed = limits.api_calls_per_minute if window == MINUTE else limits.api_calls_per_hour
        bucket = int(now // seconds)
        key = f"{_PREFIX}{tenant_id}:{window}:{bucket}"
        value = _increment(backend, key, ttl=seconds * 2)
        counted.append(key)
        counts[window] = value
        if value > allowed:
            # Refused calls do not count: give back what this call took in every window so far.
            for taken in counted:
                _decrement(backend, taken)
            retry_after = max(1, math.ceil((bucket + 1) * seconds - now))
            raise RateLimited(
                f"API-call limit reached: {allowed} calls per {window}; retry in {retry_after} s",
                window=window,
                limit=allowed,
                retry_after=retry_after,
            )
    api_call_recorder.record(tenant_id, now, backend=backend)
    return RateDecision(
        tenant_id=tenant_id, minute_count=counts[MINUTE], hour_count=counts[HOUR], limits=limits
    )


def api_calls_flush() -> int:
    """Write every pending API-call count now (one UPDATE per 200 tenants); returns calls written."""
    return api_call_recorder.flush()


class ApiCallRecorder:
    """Pending API-call counts per (tenant, UTC day), kept in the cache and written in batches."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        # Keys this process incremented since it last flushed; the counts themselves are in the cache.
        self._seen: set[tuple[str, date]] = set()
        self._first_pending: float | None = None

    def record(self, tenant_id: str, now: float, *, backend: BaseCache | None = None) -> None:
        """Count one call; flush when the interval or the count threshold is reached."""
        backend = backend or caches[DEFAULT_CACHE_ALIAS]
        day = datetime.fromtimestamp(now, tz=UTC).date()
        _increment(backend, _pending_key(tenant_id, day), ttl=_PENDING_TTL)
        recorded = _increment(backend, f"{_PREFIX}recorded", ttl=_PENDING_TTL)
        with self._lock:
            self._seen.add((tenant_id, day))
            if recorded == 1 or self._first_pending is None:
                # The first call since the last flush (or since the cache was cleared) starts the clock:
                # an idle process never flushes, a busy one at most once per interval.
                self._first_pending = now
            first = self._first_pending
        due = recorded >= settings.API_CALLS_FLUSH_COUNT or now - first >= settings.API_CALLS_FLUSH_SECONDS
        if due and self._flush_lock.acquire(blocking=False):
            # One flush at a time per process; the others go on serving.
            try:
                self._flush_locked()
            except (ServiceError, BigQueryError):
                # Bookkeeping must never fail an API call; the counts stay pending for the next flush.
                logger.warning("API-call count flush failed; will retry", exc_info=True)
            finally:
                self._flush_lock.release()

    def flush(self) -> int:
        """Write the pending counts; on failure they stay pending and the error propagates."""
        with self._flush_lock:
            return self._flush_locked()

    def reset(self) -> None:
        """Forget which keys this process saw (tests; the counts live in the cache)."""
        with self._lock:
            self._seen.clear()
            self._first_pending = None

    def _flush_locked(self) -> int:
        backend = caches[DEFAULT_CACHE_ALIAS]
        with self._lock:
            seen, self._seen = self._seen, set()
            self._first_pending = None
        backend.delete(f"{_PREFIX}recorded")
        taken: dict[tuple[str, date], int] = {}
        for tenant_id, day in seen:
            amount = _take(backend, _pending_key(tenant_id, day))
            if amount:
                taken[(tenant_id, day)] = amount
        if not taken:
            return 0
        try:
            with bigquery_errors_translated():
                usage_add_api_calls(counts=taken)
        except BaseException:
            for (tenant_id, day), value in taken.items():
                _increment(backend, _pending_key(tenant_id, day), ttl=_PENDING_TTL, amount=value)
            with self._lock:
                self._seen |= set(taken)
            raise
        return sum(taken.values())


api_call_recorder = ApiCallRecorder()


# --- internals --------------------------------------------------------------------------------------
def _limits(backend: BaseCache, tenant_id: str) -> EffectiveLimits | None:
    fallback_key = f"{_PREFIX}limits-unknown:{tenant_id}"
    if backend.get(fallback_key):
        return None
    try:
        return subscription_limits_cached(tenant_id=tenant_id)
    except (ServiceError, BigQueryError) as exc:
        logger.warning("API-call limits of tenant %s unknown (%s); not limiting for now", tenant_id, exc)
        backend.set(fallback_key, True, _FALLBACK_TTL)
        return None


def _pending_key(tenant_id: str, day: date) -> str:
    return f"{_PREFIX}pending:{tenant_id}:{day:%Y%m%d}"


def _increment(backend: BaseCache, key: str, *, ttl: float, amount: int = 1) -> int:
    """Atomic add on a cache counter, created at `amount` when absent (incr alone fails on a miss)."""
    try:
        return int(backend.incr(key, amount))
    except ValueError:
        if backend.add(key, amount, ttl):
            return amount
        return int(backend.incr(key, amount))


def _take(backend: BaseCache, key: str) -> int:
    """Take a pending count out of the cache; what this caller took (0 if another flush had it).

    Read then decrement in two steps: another flush (a thread, or a process sharing Redis) may take the
    same count in between. The decrement is atomic, so a result below zero shows how much of what we
    read was gone: give exactly that shortfall back and count only the rest.
    """
    value = backend.get(key)
    amount = int(value) if value else 0
    if amount <= 0:
        # Nothing pending, or only another flush's shortfall not yet given back: nothing to take.
        return 0
    try:
        left = int(backend.decr(key, amount))
    except ValueError:
        return 0  # expired meanwhile
    if left >= 0:
        return amount
    shortfall = min(amount, -left)
    _increment(backend, key, ttl=_PENDING_TTL, amount=shortfall)
    return amount - shortfall


def _decrement(backend: BaseCache, key: str, amount: int = 1) -> None:
    # A key that expired meanwhile has nothing to give back.
    with contextlib.suppress(ValueError):
        backend.decr(key, amount)
