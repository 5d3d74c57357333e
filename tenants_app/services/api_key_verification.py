"""Verifying tenant API keys from the shared cache, with batched `last_used_at` (issuing is api_keys.py).

Verification is served from Django's cache, keyed by the hash, after the first lookup: a hit costs zero
BigQuery jobs. Revocation, rotation and tenant status changes make the entries stale (generations.py),
and the cache is shared by every process (diskcache on one machine, Redis across machines), so they take
effect at once everywhere; API_KEY_CACHE_SECONDS (default 60) bounds only a change made behind the
services' back. Unknown keys are cached as such for API_KEY_NEGATIVE_CACHE_SECONDS (default 10), so a
flood of bad keys does not become a flood of BigQuery jobs.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from bigquery_backend.exceptions import BackendUnavailable, InvalidInput, NotFound
from bigquery_backend.repository import Repository
from tenants_app import secret_shapes
from tenants_app.metrics import cache_lookup_recorded
from tenants_app.models import WORKING_TENANT_STATUSES, TenantApiKey, TenantProfile
from tenants_app.repositories import central_repository
from tenants_app.services.errors import (
    ApiKeyExpired,
    ApiKeyInvalid,
    ApiKeyRevoked,
    ServiceUnavailable,
    TenantSuspended,
    ValidationFailed,
)
from tenants_app.services.generations import (
    bump,
    generation,
    generations,
    key_subject,
    still_current,
    tenant_subject,
)

logger = logging.getLogger(__name__)

# The key's shape is written once (secret_shapes): what we accept is what the log masking finds.
_ENVIRONMENT_PATTERN = re.compile(secret_shapes.OUR_KEY_ENV)
_KEY_PATTERN = secret_shapes.OUR_KEY_SHAPE
_MAX_KEY_LENGTH = 64  # longer input is never a key: refuse it before hashing or matching

# v4: entries are {"entry", "fresh_until", "generations"}; an entry of a process still running older code
# is never read.
_CACHE_PREFIX = "cvg:api_key:v4:"
_UNKNOWN = "unknown"


@contextmanager
def bigquery_errors_translated() -> Iterator[None]:
    """Turn backend errors into service errors: the API maps those to one HTTP status each."""
    # Messages reach API clients: they are ours, and BigQuery's own text (which can quote SQL, values
    # and resource names) goes to the log only.
    try:
        yield
    except InvalidInput as exc:
        logger.warning("BigQuery refused a statement: %s", exc)
        raise ValidationFailed("The request was refused as invalid.", errors=exc.errors) from exc
    except BackendUnavailable as exc:
        logger.warning("BigQuery is unavailable: %s", exc)
        # Not "nothing was changed": an outage between two writes leaves the first, and the same
        # request sent again finishes the job (every multi-step service is written to allow that).
        raise ServiceUnavailable("BigQuery is unavailable; send the same request again later.") from exc
    except NotFound as exc:
        # Row lookups return None, so NotFound here means a missing table or dataset: a deployment
        # that was not bootstrapped, never something the caller did.
        logger.error("BigQuery table or dataset missing (has bootstrap_bigquery run?): %s", exc)
        raise ServiceUnavailable("The service is not ready; retry later.") from exc


# --- results ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VerifiedApiKey:
    """Who a verified key belongs to and what it may do."""

    tenant_id: str
    api_key_id: str
    scopes: tuple[str, ...]
    expires_at: datetime | None

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


# --- services ---------------------------------------------------------------------------------------
def api_key_verify(*, key: str, now: datetime | None = None) -> VerifiedApiKey:
    """Who `key` belongs to, from the cache when possible; ApiKeyInvalid/Revoked/Expired, TenantSuspended.

    `now` (default: the current time) is the clock that judges the key's expiry and the cached entry's age.
    """
    match = _KEY_PATTERN.fullmatch(key) if isinstance(key, str) and len(key) <= _MAX_KEY_LENGTH else None
    if match is None:
        raise ApiKeyInvalid("API key is malformed")
    if match["env"] != api_key_environment():
        raise ApiKeyInvalid(f"API key was issued for another environment ({match['env']})")
    now = timezone.now() if now is None else now
    entry = _verification_entry(hash_api_key(key), now)
    if entry == _UNKNOWN:
        raise ApiKeyInvalid("API key is not valid")
    # Checked on every call, cached or not: an expiry takes effect to the second.
    if entry["revoked"]:
        raise ApiKeyRevoked("API key has been revoked")
    expires_at: datetime | None = entry["expires_at"]
    if expires_at is not None and expires_at <= now:
        raise ApiKeyExpired("API key has expired")
    if entry["tenant_status"] not in WORKING_TENANT_STATUSES:
        status = str(entry["tenant_status"]).lower()
        raise TenantSuspended(f"tenant {entry['tenant_id']} is {status}: its API keys are refused")
    last_used_recorder.record(entry["api_key_id"])
    return VerifiedApiKey(
        tenant_id=entry["tenant_id"],
        api_key_id=entry["api_key_id"],
        scopes=tuple(entry["scopes"]),
        expires_at=expires_at,
    )


def api_key_cache_invalidate(*, tenant_id: str) -> None:
    """Make every cached verification of the tenant's keys stale (after a status change); no job.

    Call it after the change is written to BigQuery: a verification that read the tenant before the
    change was written is then stale at once, whichever process cached it and whenever it lands.
    """
    bump(tenant_subject(tenant_id))


def api_key_usage_flush() -> int:
    """Write the pending `last_used_at` values now (one DML); returns how many keys it covered."""
    return last_used_recorder.flush()


# --- key material -----------------------------------------------------------------------------------
def api_key_environment() -> str:
    """The environment named in every key (setting API_KEY_ENVIRONMENT, default `live`)."""
    env = settings.API_KEY_ENVIRONMENT
    if not _ENVIRONMENT_PATTERN.fullmatch(env):
        raise ImproperlyConfigured(f"API_KEY_ENVIRONMENT must be 2-8 lowercase letters, not {env!r}")
    return env


def hash_api_key(key: str) -> str:
    """sha256 hex of the full key. No salt needed: the key itself carries ~238 random bits."""
    return hashlib.sha256(key.encode("ascii")).hexdigest()


# --- verification -----------------------------------------------------------------------------------
def _cache_key(key_hash: str) -> str:
    # The hash, never the key: cache backends (Redis, memcached) may be read by other tools.
    return f"{_CACHE_PREFIX}{key_hash}"


def api_key_forget(key_hash: str) -> None:
    """The key changed (revoked, rotated): every cached verification of it is stale from now on."""
    bump(key_subject(key_hash))
    cache.delete(_cache_key(key_hash))


def _verification_entry(key_hash: str, now: datetime) -> dict[str, Any] | str:
    """The key's entry (see `_lookup`): from the cache while fresh and current, else looked up and cached.

    Two cache reads on a hit: the entry with its key's generation, then its tenant's generation
    (tenants_app/services/generations.py says why generations, not deletes).
    """
    cache_key, subject = _cache_key(key_hash), key_subject(key_hash)
    current, found = generations([subject], also=[cache_key])
    cached = found.get(cache_key)
    # The entry carries its own deadline, judged by the caller's clock: the backend's TTL runs on the
    # backend's clock, which nothing can move (a test would have to sleep through it).
    if (
        cached is not None
        and cached["fresh_until"] > now
        and still_current(cached["generations"], known=current)
    ):
        cache_lookup_recorded(cache="api_key", hit=True)
        return cached["entry"]
    cache_lookup_recorded(cache="api_key", hit=False)
    entry, tenant_generations = _lookup(key_hash)
    unknown = entry == _UNKNOWN
    seconds = settings.API_KEY_NEGATIVE_CACHE_SECONDS if unknown else settings.API_KEY_CACHE_SECONDS
    cache.set(
        cache_key,
        {
            "entry": entry,
            "fresh_until": now + timedelta(seconds=seconds),
            "generations": {subject: current[subject], **tenant_generations},
        },
        seconds,
    )
    return entry


def _lookup(key_hash: str) -> tuple[dict[str, Any] | str, dict[str, str]]:
    """(key row plus its tenant's status as a cache entry, `{tenant subject: its generation}` read before
    the profile) in two jobs; or (`_UNKNOWN`, {}) in one."""
    with bigquery_errors_translated():
        rows = _keys().list(filters={"api_key_hash": key_hash}, limit=2)
        if len(rows) != 1:
            if rows:
                # ~238 random bits make a collision impossible in practice; refuse rather than guess.
                logger.error("%d API key rows share one hash; refusing them", len(rows))
            return _UNKNOWN, {}
        row = rows[0]
        tenant_generation = generation(tenant_subject(row.tenant_id))
        profile = central_repository(TenantProfile).find(row.tenant_id)
    if profile is None:
        return _UNKNOWN, {}
    entry = {
        "tenant_id": row.tenant_id,
        "api_key_id": row.api_key_id,
        "scopes": list(row.scopes),
        "expires_at": row.expires_at,
        "revoked": not row.is_active or row.revoked_at is not None,
        "tenant_status": profile.status,
    }
    return entry, {tenant_subject(row.tenant_id): tenant_generation}


class LastUsedRecorder:
    """Collects the ids of used keys and writes `last_used_at` for all of them with one DML.

    BigQuery DML is slow, quota-limited and copies data: one UPDATE per request would cost more than
    the request. The precision of `last_used_at` is therefore the flush interval.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        # Monotonic, so a wall-clock jump never delays or hastens a flush; tests swap in a clock they move.
        self.clock = clock
        self._lock = threading.Lock()
        self._pending: set[str] = set()
        self._last_flush = clock()

    def record(self, api_key_id: str) -> None:
        """Remember a use; flush when the interval (API_KEY_LAST_USED_FLUSH_SECONDS) has elapsed."""
        interval = settings.API_KEY_LAST_USED_FLUSH_SECONDS
        with self._lock:
            self._pending.add(api_key_id)
            due = self.clock() - self._last_flush >= interval
            if due:
                # Claimed under the lock: of many concurrent requests, exactly one flushes.
                self._last_flush = self.clock()
        if due:
            try:
                self.flush()
            except Exception:
                # Bookkeeping must never fail an authenticated request; the ids stay pending.
                logger.warning("last_used_at flush failed; will retry at the next interval", exc_info=True)

    def flush(self) -> int:
        """Write every pending id now; on failure they stay pending and the error propagates."""
        with self._lock:
            ids, self._pending = self._pending, set()
            self._last_flush = self.clock()
        if not ids:
            return 0
        try:
            with bigquery_errors_translated():
                _keys().update_where(
                    {"last_used_at": timezone.now()}, filters={"api_key_id__in": sorted(ids)}
                )
        except BaseException:
            with self._lock:
                self._pending |= ids
            raise
        return len(ids)

    def reset(self) -> None:
        """Forget pending ids and restart the interval (tests; a fresh process starts this way)."""
        with self._lock:
            self._pending.clear()
            self._last_flush = self.clock()

    @property
    def pending(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._pending)


last_used_recorder = LastUsedRecorder()


# --- helpers ----------------------------------------------------------------------------------------
def _keys() -> Repository[TenantApiKey]:
    return central_repository(TenantApiKey)
