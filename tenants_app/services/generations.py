"""Generation counters in the shared cache: how a cached read learns, in every process at once, that
what it read has changed since.

A reader notes the generation BEFORE its BigQuery read and stores it with what it caches; a writer
bumps the generation AFTER its BigQuery write. An entry stored under an older generation than the
current one may hold a read that missed a change, so it is never used. Deleting entries instead has a
hole: a read that began before the write can store its stale answer just after the delete. Counters are
atomic increments of the shared cache (diskcache on one machine, Redis across machines).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.core.cache import cache

_PREFIX = "cvg:generation:v1:"


def tenant_subject(tenant_id: str) -> str:
    """What changes with the tenant's profile or status: its cached profile and key verifications."""
    return f"tenant:{tenant_id}"


def key_subject(key_hash: str) -> str:
    """What changes with one API key (revocation, rotation)."""
    return f"api-key:{key_hash}"


def generation(subject: str) -> int:
    """The subject's current generation (0 until its first change)."""
    return int(cache.get(_PREFIX + subject, 0))


def generations(
    subjects: Sequence[str], *, also: Sequence[str] = ()
) -> tuple[dict[str, int], dict[str, Any]]:
    """Current generations of `subjects`, and the cache entries named in `also`, in one cache read."""
    found = cache.get_many([_PREFIX + subject for subject in subjects] + list(also))
    current = {subject: int(found.get(_PREFIX + subject, 0)) for subject in subjects}
    return current, {name: found[name] for name in also if name in found}


def bump(subject: str) -> None:
    """The subject changed: every entry stored under an earlier generation is stale from now on."""
    name = _PREFIX + subject
    # No expiry: a counter that vanished would read 0 again and could revive an entry stored under 0.
    try:
        cache.incr(name)
    except ValueError:
        if not cache.add(name, 1, timeout=None):
            cache.incr(name)
