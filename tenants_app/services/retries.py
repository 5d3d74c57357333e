"""Whether the current request repeats one that failed with its outcome unknown (BigQuery or KMS down).

The API's Idempotency-Key support (tenants_app/api/idempotency.py) marks the retry of a request that
ended in a 503 by the same caller with the same key and body. A service whose answer carries a secret
shown once (a new API key) can then show it again if that failed request did make it, instead of
refusing the repeat as a duplicate; nothing else changes for such a retry.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

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
