"""What a tenant API key may carry and grant: the scope catalogue, its defaults, and the bounds a key sets
on the keys it creates (never a scope it lacks, never a later expiry).

Issuing is api_keys.py, rotating api_key_rotation.py; the API checks the scopes per endpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from tenants_app.services.errors import ScopeNotHeld
from tenants_app.timestamps import api_timestamp

# Every scope a key can carry. The API checks them per endpoint; nothing else is accepted.
API_KEY_SCOPES: tuple[str, ...] = (
    "tenant:read",  # GET /me, own subscription and usage
    "keys:manage",  # list, create, rotate and revoke the tenant's own keys
    "credentials:manage",  # add, replace and deactivate cloud credentials (metadata only is ever shown)
    "pipelines:read",  # pipeline configs and runs
    "pipelines:manage",  # create, change, pause and delete pipeline configs (schedules)
    "pipelines:execute",  # trigger pipeline runs: consumes quota, so never granted by default
)
# What a new key gets when nobody chose (the portal's form starts with these ticked, the API grants them
# when `scopes` is omitted): read-only, so a key made in passing can change nothing; every other scope
# is granted on purpose.
DEFAULT_API_KEY_SCOPES: tuple[str, ...] = tuple(s for s in API_KEY_SCOPES if s.endswith(":read"))
# What the initial key of an onboarding gets: the tenant's own administration (its keys, credentials
# and schedules) but not running pipelines, so a key that leaks from an admin's machine cannot burn the
# tenant's quota by itself; issue a key with `pipelines:execute` for the systems that run pipelines.
INITIAL_API_KEY_SCOPES: tuple[str, ...] = tuple(s for s in API_KEY_SCOPES if s != "pipelines:execute")


def check_scopes(errors: dict[str, list[str]], scopes: object) -> list[str]:
    """The scopes as stored (catalogue order, no duplicates); what is wrong with them goes to `errors`."""
    if isinstance(scopes, str) or not isinstance(scopes, Sequence | set | frozenset):
        errors["scopes"] = ["Give a list of scopes."]
        return []
    unknown = sorted({str(scope) for scope in scopes if scope not in API_KEY_SCOPES})
    if unknown:
        errors["scopes"] = [
            f"Unknown scope(s) {', '.join(unknown)}; choose from {', '.join(API_KEY_SCOPES)}."
        ]
    elif not scopes:
        errors["scopes"] = ["Choose at least one scope."]
    # Catalogue order and no duplicates, whatever order they came in.
    return [scope for scope in API_KEY_SCOPES if scope in scopes]


def within_creator_expiry(
    expires_at: datetime | None, creator_expires_at: datetime | None, *, refuse_later: bool
) -> datetime | None:
    """The new key's expiry, never after its creator's: a key must not outlive the key that made it.

    Like scopes (a key grants only what it holds), a later expiry is refused as ScopeNotHeld when the
    caller asked for it (`refuse_later`); one the caller did not choose (a rotation's carried-over
    expiry, or none) is brought forward to the creator's.
    """
    if creator_expires_at is None:
        return expires_at
    if expires_at is not None and expires_at <= creator_expires_at:
        return expires_at
    if expires_at is not None and refuse_later:
        raise ScopeNotHeld(
            "This API key cannot grant a key that outlives it: expires_at must be no later than "
            f"its own expiry, {api_timestamp(creator_expires_at)}."
        )
    return creator_expires_at
