"""Generations in the shared cache: how a cached read learns, in every process at once, that what it
read has changed since.

A reader notes the subject's generation (a random token) BEFORE its BigQuery read and stores it with
what it caches; a writer replaces the token AFTER its BigQuery write (after a write to Django's database,
once now and again when the transaction commits). An entry stored under another
token than the current one may hold a read that missed a change, so it is never used. Deleting entries
instead has a hole: a read that began before the write can store its stale answer just after the
delete. Tokens live in the shared cache (diskcache on one machine, Redis across machines), so this
holds across processes.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from django.core.cache import cache

_PREFIX = "cvg:generation:v1:"


def tenant_subject(tenant_id: str) -> str:
    """What changes with the tenant's profile or status: its cached profile and key verifications."""
    return f"tenant:{tenant_id}"


def key_subject(key_hash: str) -> str:
    """What changes with one API key (revocation, rotation)."""
    return f"api-key:{key_hash}"


def token_subject(token_hash: str) -> str:
    """What changes with one admin or worker token (revocation)."""
    return f"token:{token_hash}"


def user_subject(user_id: int) -> str:
    """What changes with one Django user that tokens act as (active, staff, groups)."""
    return f"user:{user_id}"


def cache_key(subject: str) -> str:
    """Where the subject's generation is kept (tests evict it to show a lost one is harmless)."""
    return _PREFIX + subject


def generation(subject: str) -> str:
    """The subject's current generation: an opaque token that changes with every change."""
    name = _PREFIX + subject
    current = cache.get(name)
    if current is None:
        cache.add(name, _new_token(), timeout=None)
        # Another process may have added first: use whichever token is stored. If the cache could not
        # keep it at all, a token no entry carries just means nothing cached is used.
        current = cache.get(name) or _new_token()
    return str(current)


def generations(
    subjects: Sequence[str], *, also: Sequence[str] = ()
) -> tuple[dict[str, str], dict[str, Any]]:
    """Current generations of `subjects`, and the cache entries named in `also`, in one cache read
    (one more per subject that has no generation yet)."""
    found = cache.get_many([_PREFIX + subject for subject in subjects] + list(also))
    current = {
        subject: str(found[_PREFIX + subject]) if _PREFIX + subject in found else generation(subject)
        for subject in subjects
    }
    return current, {name: found[name] for name in also if name in found}


def still_current(stored: Mapping[str, str], *, known: Mapping[str, str] | None = None) -> bool:
    """Whether each subject of `stored` (`{subject: generation}`, what an entry was cached under) still
    has that generation; `known` holds generations already read, the rest cost one cache read."""
    current = dict(known or {})
    missing = [subject for subject in stored if subject not in current]
    if missing:
        current.update(generations(missing)[0])
    return all(current[subject] == stored_as for subject, stored_as in stored.items())


def bump(subject: str) -> None:
    """The subject changed: every entry stored under an earlier generation is stale from now on."""
    # Random tokens rather than a counter: a generation evicted from the cache (full diskcache, Redis
    # under memory pressure) comes back as a new token, never as a value an old entry was stored under.
    cache.set(_PREFIX + subject, _new_token(), timeout=None)


def _new_token() -> str:
    return uuid.uuid4().hex
