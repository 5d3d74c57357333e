"""Whether the current request repeats one that failed with its outcome unknown (BigQuery or KMS down).

The API's Idempotency-Key support (tenants_app/api/idempotency.py) marks the retry of a request that
ended in a 503 by the same caller with the same key and body. A service whose answer carries a secret
shown once (a new API key) can then show it again if that failed request did make it, instead of
refusing the repeat as a duplicate; nothing else changes for such a retry.

Services that create a row with a new id take it from `stable_id`: for a request with an
Idempotency-Key the id is derived from the request, so the retry of an insert whose answer was lost
finds the row it made (and returns it) instead of creating a duplicate.
"""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

_retrying: contextvars.ContextVar[bool] = contextvars.ContextVar("retry_of_unknown_outcome", default=False)


@contextmanager
def retry_of_unknown_outcome(active: bool = True) -> Iterator[None]:
    """Mark the code inside the block as the retry of a request whose outcome is unknown."""
    token = _retrying.set(active)
    try:
        yield
    finally:
        _retrying.reset(token)


def is_retry_of_unknown_outcome() -> bool:
    """True inside `retry_of_unknown_outcome()`: the same caller repeats a request that failed with 503."""
    return _retrying.get()


# Namespace of ids derived from a request (uuid5): fixed, so a retry in any process or release derives
# the same id as the attempt it repeats.
_STABLE_NAMESPACE = uuid.UUID("0b6f7a52-2c1d-5e4a-8f3b-7d9e1c4a6b20")
# A digest of (caller, method, path, Idempotency-Key, body), bound by the API around a request that
# carries an Idempotency-Key: the first attempt and its retries see the same one. Never logged.
_seed: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_seed", default=None)


@contextmanager
def request_seed(seed: str | None) -> Iterator[None]:
    """Bind the seed `stable_id` derives ids from for the code inside the block (None: no seed)."""
    token = _seed.set(seed)
    try:
        yield
    finally:
        _seed.reset(token)


def has_request_seed() -> bool:
    """True when ids from `stable_id` are the same for a retry of this request."""
    return _seed.get() is not None


def stable_id(kind: str) -> str:
    """A new id (32 hex digits) for the `kind` of row this request creates: the same on its retries.

    With a seed bound (a request with an Idempotency-Key) the id is uuid5 of the seed and `kind`, so a
    retry of a request whose insert landed but whose answer was lost finds that row instead of adding
    a second one; without, a random uuid4 as before. One row per kind per request.
    """
    seed = _seed.get()
    if seed is None:
        return uuid.uuid4().hex
    return uuid.uuid5(_STABLE_NAMESPACE, f"{seed}/{kind}").hex


def exponential_backoff(*, retry_count: int, base_seconds: float, cap_seconds: float) -> timedelta:
    """Delay before retry number `retry_count + 1`: base * 2**retry_count, capped (runs, webhooks)."""
    return timedelta(seconds=min(cap_seconds, base_seconds * (2 ** min(retry_count, 30))))
