"""Tenant API keys: issue, list, rotate and revoke (verifying them is api_key_verification.py).

A key is `cvg_{env}_{40 base62 chars}` (about 238 random bits), shown exactly once. BigQuery stores its
sha256 hex (lookups go by hash), a display prefix and a KMS-encrypted copy; never the key itself.
Revoking or rotating a key makes its cached verifications stale at once (`api_key_forget`).
"""

from __future__ import annotations

import logging
import re
import secrets
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.utils import timezone
from google.cloud import bigquery

from bigquery_backend.exceptions import BigQueryError
from bigquery_backend.identifiers import quote_column
from bigquery_backend.models import model_replace
from tenants_app import secret_shapes
from tenants_app.kms import KmsUnavailable, aad_for, get_kms
from tenants_app.models import AuditLogEntry, TenantApiKey, TenantProfile, TenantStatus
from tenants_app.repositories import central_repository
from tenants_app.services.api_key_verification import (
    _keys,
    api_key_environment,
    api_key_forget,
    bigquery_errors_translated,
    hash_api_key,
)
from tenants_app.services.audit import AuditAction, audit_record
from tenants_app.services.errors import (
    AlreadyExists,
    DoesNotExist,
    ScopeNotHeld,
    ServiceUnavailable,
    ValidationFailed,
)
from tenants_app.services.retries import has_request_seed, is_retry_of_unknown_outcome, stable_id
from tenants_app.services.text_rules import bidi_check

logger = logging.getLogger(__name__)

# --- catalogue --------------------------------------------------------------------------------------
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

ROTATION_GRACE_PERIODS: tuple[timedelta, ...] = (
    timedelta(0),
    timedelta(hours=1),
    timedelta(hours=24),
    timedelta(days=7),
)

# The key's shape is written once (secret_shapes): what we issue is what the log masking finds.
KEY_PREFIX = secret_shapes.OUR_KEY_PREFIX
RANDOM_LENGTH = secret_shapes.OUR_KEY_RANDOM_LENGTH
DISPLAY_RANDOM_CHARS = 6
_KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")

NAME_MAX_LENGTH = 100
# A replacement is named after its predecessor: "CI deploys (rotated 2026-12-03)", the UTC date.
_ROTATED_SUFFIX = re.compile(r"\s*\(rotated \d{4}-\d{2}-\d{2}\)$")
# The name of a replacement whose predecessor had none (keys of the original system).
UNNAMED_KEY = "API key"
REASON_MAX_LENGTH = 500
ACTOR_MAX_LENGTH = 254

# Namespace of replacement key ids (uuid5): fixed, so an id is the same in every process and release.
_ROTATION_NAMESPACE = uuid.UUID("6f1c1f0e-4a43-5d27-9a53-3c1b8f5d2a10")
_CLOSED_TENANT_STATUSES = frozenset({TenantStatus.CANCELLED, TenantStatus.DELETED})


# --- results ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IssuedApiKey:
    """A newly issued key: the stored row plus the plaintext, which exists only in this object."""

    row: TenantApiKey
    plaintext: str = field(repr=False)

    def __str__(self) -> str:
        return f"API key {self.row.api_key_id} ({self.row.key_prefix}...)"


# --- services ---------------------------------------------------------------------------------------
def api_key_create(
    *,
    tenant_id: str,
    name: str,
    scopes: Sequence[str],
    created_by: str,
    expires_at: datetime | None = None,
    max_expires_at: datetime | None = None,
    api_key_id: str | None = None,
    record_audit: bool = True,
) -> IssuedApiKey:
    """Issue a key for a tenant that exists and is not closed; the plaintext is in the result only.

    `max_expires_at` is the creating key's own expiry (None for staff, or a key that never expires):
    the new key expires then when no `expires_at` is given, and a later one is ScopeNotHeld.

    Audited as api_key.create, except with `record_audit=False`, which onboarding uses: its one
    tenant.onboard entry names the initial key. Without `api_key_id` the id is `retries.stable_id`:
    the retry of an API request whose insert landed but whose answer was lost (same Idempotency-Key)
    finds that key and shows it again to the same caller if nobody used it, instead of a second key.
    """
    errors: dict[str, list[str]] = {}
    clean_name = _check_text(errors, "name", name, max_length=NAME_MAX_LENGTH)
    bidi_check(errors, "name", clean_name)
    clean_scopes = _check_scopes(errors, scopes)
    clean_created_by = _check_text(errors, "created_by", created_by, max_length=ACTOR_MAX_LENGTH)
    if expires_at is not None:
        if not isinstance(expires_at, datetime) or timezone.is_naive(expires_at):
            errors["expires_at"] = ["Give a timezone-aware date and time."]
        elif expires_at <= timezone.now():
            errors["expires_at"] = ["Must be in the future."]
    if api_key_id is not None and not (isinstance(api_key_id, str) and _KEY_ID_PATTERN.fullmatch(api_key_id)):
        errors["api_key_id"] = ["Use 1-128 letters, digits, '_' or '-'."]
    if errors:
        raise ValidationFailed(_summary(errors), errors=errors)
    expires_at = _within_creator_expiry(expires_at, max_expires_at, refuse_later=True)

    derived = api_key_id is None
    chosen_id = api_key_id or stable_id("api_key")
    with bigquery_errors_translated():
        profile = _usable_profile(tenant_id)
        try:
            issued = _issue(
                tenant_id=profile.tenant_id,
                api_key_id=chosen_id,
                name=clean_name,
                scopes=clean_scopes,
                created_by=clean_created_by,
                expires_at=expires_at,
                # A caller-chosen or request-derived id makes the call idempotent: insert only if
                # absent (one MERGE). A random id cannot collide: a plain INSERT, as cheap.
                if_absent=not derived or has_request_seed(),
            )
        except AlreadyExists:
            if not derived:
                raise
            issued = _finish_lost_create(
                tenant_id=profile.tenant_id, api_key_id=chosen_id, created_by=clean_created_by
            )
            if record_audit and _audit_missing(
                action=AuditAction.API_KEY_CREATE, tenant_id=issued.row.tenant_id, target_id=chosen_id
            ):
                audit_record(
                    action=AuditAction.API_KEY_CREATE,
                    actor=clean_created_by,
                    tenant_id=issued.row.tenant_id,
                    target_type="api_key",
                    target_id=chosen_id,
                    after=api_key_audit_data(issued.row),
                )
            return issued
    logger.info(
        "API key %s (%s) issued for tenant %s by %s",
        issued.row.api_key_id,
        issued.row.key_prefix,
        tenant_id,
        clean_created_by,
    )
    if record_audit:
        audit_record(
            action=AuditAction.API_KEY_CREATE,
            actor=clean_created_by,
            tenant_id=issued.row.tenant_id,
            target_type="api_key",
            target_id=issued.row.api_key_id,
            after=api_key_audit_data(issued.row),
        )
    return issued


def _finish_lost_create(*, tenant_id: str, api_key_id: str, created_by: str) -> IssuedApiKey:
    """The key a lost answer carried, shown again to its creator if still unused; else AlreadyExists."""
    refused = AlreadyExists(f"API key {api_key_id} already exists; its key cannot be shown again")
    if not is_retry_of_unknown_outcome():
        raise refused
    row = _keys().find(api_key_id)
    # Shown again only to the caller whose own failed request made it, before anyone used, rotated
    # or revoked it: anything else means the key has a life of its own and stays unseen.
    if (
        row is None
        or row.tenant_id != tenant_id
        or row.created_by != created_by
        or row.last_used_at is not None
        or not row.is_active
        or row.revoked_at is not None
        or row.replaced_by_key_id
        or row.encrypted_api_key is None
    ):
        raise refused
    try:
        plaintext = get_kms().decrypt(
            bytes(row.encrypted_api_key), aad=aad_for("tenant_api_keys", row.tenant_id, row.api_key_id)
        )
    except KmsUnavailable as exc:
        raise ServiceUnavailable("KMS is unavailable; retry later.") from exc
    row.encrypted_api_key = None
    logger.info("API key %s: the lost answer of its creation is shown again to %s", api_key_id, created_by)
    return IssuedApiKey(row=row, plaintext=plaintext.decode("ascii"))


def api_key_audit_data(row: TenantApiKey) -> dict[str, Any]:
    """What the audit log may say about a key: never the key, its hash or its ciphertext."""
    return {
        "api_key_id": row.api_key_id,
        "name": row.name,
        "key_prefix": row.key_prefix,
        "scopes": list(row.scopes or ()),
        "expires_at": row.expires_at,
        "is_active": row.is_active,
    }


def api_key_list(*, tenant_id: str, include_revoked: bool = False) -> list[TenantApiKey]:
    """The tenant's keys, newest first, in one job; rows carry the display prefix, never a key."""
    filters: dict[str, Any] = {"tenant_id": tenant_id}
    if not include_revoked:
        filters["is_active"] = True
    with bigquery_errors_translated():
        rows = _keys().list(filters=filters, order_by=("-created_at",))
    for row in rows:
        # Listing never needs the ciphertext: keep it out of serializers and templates by construction.
        row.encrypted_api_key = None
    return rows


def replacement_key_id(*, tenant_id: str, api_key_id: str) -> str:
    """The id a rotation of this key gives its replacement: one per key, so a retried rotation finds it."""
    return uuid.uuid5(_ROTATION_NAMESPACE, f"{tenant_id}/{api_key_id}").hex


def rotated_key_name(*, name: str | None, rotated_at: datetime) -> str:
    """A replacement's name: its predecessor's, with the rotation's UTC date as the only suffix.

    A name that already ends in a rotation suffix gets the new date instead of a second suffix, and a
    long name is cut so that the suffix always fits in NAME_MAX_LENGTH.
    """
    suffix = f" (rotated {rotated_at.astimezone(UTC).date().isoformat()})"
    base = _ROTATED_SUFFIX.sub("", (name or "").strip()) or UNNAMED_KEY
    return base[: NAME_MAX_LENGTH - len(suffix)].rstrip() + suffix


def api_key_rotate(
    *,
    tenant_id: str,
    api_key_id: str,
    grace: timedelta,
    rotated_by: str,
    grantable_scopes: Collection[str] | None = None,
    max_expires_at: datetime | None = None,
    resume: bool | None = None,
) -> IssuedApiKey:
    """Issue a replacement with the same scopes, named after the old key (`rotated_key_name`); the old
    key works for `grace` more.

    `grantable_scopes` (a tenant key's own) bounds what the rotation may hand out; None for staff.
    `max_expires_at` (a tenant key's own expiry; None for staff) bounds the replacement's expiry: it
    keeps the old key's, brought forward to the rotating key's when that is earlier.
    Safe to retry after a failure at any step: the replacement has an id derived from the old key
    (`replacement_key_id`), so a retry replaces an orphan left by a failed attempt instead of adding a
    second key, and a rotation is made once. `resume` is for a retry of the same caller's request that
    failed with the outcome unknown (default: `retries.is_retry_of_unknown_outcome()`, which the API
    sets for a repeated Idempotency-Key): if that request did rotate the key, its replacement is shown
    again instead of a refusal "already rotated".
    """
    if resume is None:
        resume = is_retry_of_unknown_outcome()
    errors: dict[str, list[str]] = {}
    if grace not in ROTATION_GRACE_PERIODS:
        allowed = ", ".join(_describe(period) for period in ROTATION_GRACE_PERIODS)
        errors["grace"] = [f"Choose one of {allowed}."]
    clean_rotated_by = _check_text(errors, "rotated_by", rotated_by, max_length=ACTOR_MAX_LENGTH)
    if errors:
        raise ValidationFailed(_summary(errors), errors=errors)

    replacement_id = replacement_key_id(tenant_id=tenant_id, api_key_id=api_key_id)
    with bigquery_errors_translated():
        profile = _usable_profile(tenant_id)
        old = _tenant_key(tenant_id, api_key_id)
        if grantable_scopes is not None and not set(old.scopes) <= set(grantable_scopes):
            missing = ", ".join(sorted(set(old.scopes) - set(grantable_scopes)))
            raise ScopeNotHeld(f"This API key cannot rotate a key with scopes it does not hold: {missing}.")
        if old.replaced_by_key_id:
            # Linked already (maybe by a request whose answer was lost, before it cleared the
            # cache): its cached verification must not outlive the rotation on any path out of here.
            api_key_forget(old.api_key_hash)
        if old.replaced_by_key_id == replacement_id:
            # Rotated already: maybe by this very request, whose answer was lost.
            finished = _finish_lost_rotation(old, rotated_by=clean_rotated_by, grace=grace, resume=resume)
            if finished is not None:
                return finished
        now = timezone.now()
        if not old.is_active or old.revoked_at is not None:
            raise ValidationFailed(
                f"API key {api_key_id} is revoked", errors={"api_key_id": ["Revoked keys cannot be rotated."]}
            )
        if old.replaced_by_key_id:
            raise ValidationFailed(
                f"API key {api_key_id} was already rotated to {old.replaced_by_key_id}",
                errors={"api_key_id": [f"Already rotated: rotate {old.replaced_by_key_id} instead."]},
            )
        if old.expires_at is not None and old.expires_at <= now:
            raise ValidationFailed(
                f"API key {api_key_id} has expired",
                errors={"api_key_id": ["Expired keys cannot be rotated."]},
            )
        issued = _issue_replacement(
            old,
            tenant_id=profile.tenant_id,
            replacement_id=replacement_id,
            name=rotated_key_name(name=old.name, rotated_at=now),
            created_by=clean_rotated_by,
            expires_at=_within_creator_expiry(old.expires_at, max_expires_at, refuse_later=False),
        )
        values: dict[str, Any] = {"replaced_by_key_id": issued.row.api_key_id}
        if grace == timedelta(0):
            values.update(
                is_active=False,
                expires_at=now,
                revoked_at=now,
                revoked_by=clean_rotated_by,
                revoked_reason=f"Rotated to {issued.row.api_key_id} without a grace period.",
            )
        else:
            ends = now + grace
            values["expires_at"] = ends if old.expires_at is None else min(old.expires_at, ends)
        # Conditional on "still active, not rotated, and the replacement still holds OUR key": of two
        # concurrent rotations one wins, and the winner's key is the one stored. A BigQuery error here
        # leaves the outcome unknown: the replacement stays (a retry finds it), never deleted blindly.
        try:
            linked = _link_replacement(old, issued.row, values)
        except BaseException:
            # The UPDATE may have landed with its answer lost: drop the cached verification anyway.
            api_key_forget(old.api_key_hash)
            raise
        if linked == 0:
            # Rotated or revoked by a concurrent request, which clears the cache too; so do we, for
            # the entry this request may have cached meanwhile.
            api_key_forget(old.api_key_hash)
            _discard(issued.row)
            raise ValidationFailed(
                f"API key {api_key_id} was rotated or revoked meanwhile",
                errors={"api_key_id": ["Rotated or revoked by a concurrent request."]},
            )
    api_key_forget(old.api_key_hash)
    _audit_rotation(old, issued.row, rotated_by=clean_rotated_by, grace=_describe(grace), values=values)
    logger.info(
        "API key %s of tenant %s rotated to %s by %s (grace %s)",
        api_key_id,
        tenant_id,
        issued.row.api_key_id,
        clean_rotated_by,
        _describe(grace),
    )
    return issued


def _issue_replacement(
    old: TenantApiKey,
    *,
    tenant_id: str,
    replacement_id: str,
    name: str,
    created_by: str,
    expires_at: datetime | None,
) -> IssuedApiKey:
    """Store a new key under the replacement id; an orphan of a failed attempt there is replaced."""
    arguments: dict[str, Any] = {
        "tenant_id": tenant_id,
        "api_key_id": replacement_id,
        "name": name,
        "scopes": list(old.scopes),
        "created_by": created_by,
        # Rotation replaces the secret, not the policy: an expiry date carries over (or comes forward).
        "expires_at": expires_at,
        "if_absent": True,
    }
    try:
        return _issue(**arguments)
    except AlreadyExists:
        pass
    # A row is there while the old key is not linked to it: an attempt that failed before linking
    # (nobody ever saw its key), or one still running. Deleting it makes a running attempt's link
    # fail (its key is no longer stored), so exactly one of the two wins either way.
    _delete_unlinked_replacement(old, replacement_id)
    try:
        return _issue(**arguments)
    except AlreadyExists:
        raise ValidationFailed(
            f"API key {old.api_key_id} is being rotated by another request",
            errors={"api_key_id": ["Rotated by a concurrent request; reload."]},
        ) from None


def _delete_unlinked_replacement(old: TenantApiKey, replacement_id: str) -> int:
    """Delete the replacement row unless the old key already points to it (one DML)."""
    table = _keys().table
    sql = (
        f"DELETE FROM {table} WHERE api_key_id = @replacement AND tenant_id = @tenant "  # noqa: S608
        f"AND NOT EXISTS (SELECT 1 FROM {table} WHERE api_key_id = @old "
        "AND replaced_by_key_id IS NOT NULL)"
    )
    return _dml(
        sql,
        [
            bigquery.ScalarQueryParameter("replacement", "STRING", replacement_id),
            bigquery.ScalarQueryParameter("tenant", "STRING", old.tenant_id),
            bigquery.ScalarQueryParameter("old", "STRING", old.api_key_id),
        ],
    )


def _link_replacement(old: TenantApiKey, replacement: TenantApiKey, values: Mapping[str, Any]) -> int:
    """The rotation's commit: one conditional UPDATE of the old key; 1 if it won, 0 otherwise."""
    table = _keys().table
    types = {
        "replaced_by_key_id": "STRING",
        "is_active": "BOOL",
        "expires_at": "TIMESTAMP",
        "revoked_at": "TIMESTAMP",
        "revoked_by": "STRING",
        "revoked_reason": "STRING",
    }
    parameters = [
        bigquery.ScalarQueryParameter(f"v_{name}", types[name], value) for name, value in values.items()
    ]
    assignments = ", ".join(f"{quote_column(name)} = @v_{name}" for name in values)
    sql = (
        f"UPDATE {table} SET {assignments} WHERE api_key_id = @old AND tenant_id = @tenant "  # noqa: S608
        "AND is_active AND replaced_by_key_id IS NULL "
        f"AND EXISTS (SELECT 1 FROM {table} WHERE api_key_id = @replacement AND api_key_hash = @hash)"
    )
    parameters += [
        bigquery.ScalarQueryParameter("old", "STRING", old.api_key_id),
        bigquery.ScalarQueryParameter("tenant", "STRING", old.tenant_id),
        bigquery.ScalarQueryParameter("replacement", "STRING", replacement.api_key_id),
        bigquery.ScalarQueryParameter("hash", "STRING", replacement.api_key_hash),
    ]
    return _dml(sql, parameters)


def _finish_lost_rotation(
    old: TenantApiKey, *, rotated_by: str, grace: timedelta, resume: bool
) -> IssuedApiKey | None:
    """A rotation whose answer was lost: its audit entry written if missing; its key if `resume`."""
    replacement = _keys().find(old.replaced_by_key_id)
    if replacement is None:
        return None
    if _audit_missing(action=AuditAction.API_KEY_ROTATE, tenant_id=old.tenant_id, target_id=old.api_key_id):
        values = {"replaced_by_key_id": replacement.api_key_id, "expires_at": old.expires_at}
        if not old.is_active:
            values["is_active"] = False
        before = model_replace(old, is_active=True, replaced_by_key_id=None)
        # Recorded as made by whoever made it, with the grace it was given unknown to this request.
        actor = replacement.created_by or rotated_by
        _audit_rotation(before, replacement, rotated_by=actor, grace="unknown", values=values)
    # Shown again only to the caller whose own request made it, before anyone used it.
    if not resume or replacement.created_by != rotated_by or replacement.last_used_at is not None:
        return None
    if not replacement.is_active or replacement.encrypted_api_key is None:
        return None
    try:
        plaintext = get_kms().decrypt(
            bytes(replacement.encrypted_api_key),
            aad=aad_for("tenant_api_keys", replacement.tenant_id, replacement.api_key_id),
        )
    except KmsUnavailable as exc:
        raise ServiceUnavailable("KMS is unavailable; retry later.") from exc
    replacement.encrypted_api_key = None
    logger.info(
        "API key %s: the lost answer of its rotation is shown again to %s", old.api_key_id, rotated_by
    )
    return IssuedApiKey(row=replacement, plaintext=plaintext.decode("ascii"))


def _audit_rotation(
    old: TenantApiKey, new: TenantApiKey, *, rotated_by: str, grace: str, values: Mapping[str, Any]
) -> None:
    audit_record(
        action=AuditAction.API_KEY_ROTATE,
        actor=rotated_by,
        tenant_id=old.tenant_id,
        target_type="api_key",
        target_id=old.api_key_id,
        before={
            "is_active": old.is_active,
            "expires_at": old.expires_at,
            "replaced_by_key_id": old.replaced_by_key_id,
        },
        after={
            "is_active": values.get("is_active", old.is_active),
            "expires_at": values.get("expires_at", old.expires_at),
            "replaced_by_key_id": new.api_key_id,
            "grace": grace,
            "replacement": api_key_audit_data(new),
        },
    )


def _audit_missing(*, action: AuditAction, tenant_id: str, target_id: str) -> bool:
    """No audit entry for this change yet (one job; only on the retry of a failed request)."""
    filters = {"action": action, "tenant_id": tenant_id, "target_id": target_id}
    return central_repository(AuditLogEntry).count(filters=filters) == 0


def _dml(sql: str, parameters: list[Any]) -> int:
    return _keys().gateway.query(sql, parameters).affected_rows or 0


def api_key_revoke(*, tenant_id: str, api_key_id: str, reason: str, revoked_by: str) -> TenantApiKey:
    """Revoke a key for good; it stops working in every process at once (see api_key_verification)."""
    errors: dict[str, list[str]] = {}
    clean_reason = _check_text(errors, "reason", reason, max_length=REASON_MAX_LENGTH)
    clean_revoked_by = _check_text(errors, "revoked_by", revoked_by, max_length=ACTOR_MAX_LENGTH)
    if errors:
        raise ValidationFailed(_summary(errors), errors=errors)

    with bigquery_errors_translated():
        row = _tenant_key(tenant_id, api_key_id)
        if not row.is_active:
            # Already revoked: keep the first reason and who gave it.
            api_key_forget(row.api_key_hash)
            return row
        now = timezone.now()
        values = {
            "is_active": False,
            "revoked_at": now,
            "revoked_by": clean_revoked_by,
            "revoked_reason": clean_reason,
        }
        _keys().update_where(values, filters={"api_key_id": api_key_id, "tenant_id": tenant_id})
    api_key_forget(row.api_key_hash)
    for name, value in values.items():
        setattr(row, name, value)
    audit_record(
        action=AuditAction.API_KEY_REVOKE,
        actor=clean_revoked_by,
        tenant_id=tenant_id,
        target_type="api_key",
        target_id=api_key_id,
        before={"is_active": True, "revoked_at": None},
        after={"is_active": False, "revoked_at": now, "revoked_reason": clean_reason},
    )
    logger.info("API key %s of tenant %s revoked by %s", api_key_id, tenant_id, clean_revoked_by)
    return row


# --- key material -----------------------------------------------------------------------------------
def _generate_key() -> str:
    random_part = "".join(secrets.choice(secret_shapes.OUR_KEY_CHARACTERS) for _ in range(RANDOM_LENGTH))
    return f"{KEY_PREFIX}_{api_key_environment()}_{random_part}"


def _display_prefix(key: str) -> str:
    head = f"{KEY_PREFIX}_{api_key_environment()}_"
    return key[: len(head) + DISPLAY_RANDOM_CHARS]


def _issue(
    *,
    tenant_id: str,
    api_key_id: str,
    name: str,
    scopes: list[str],
    created_by: str,
    expires_at: datetime | None,
    if_absent: bool,
) -> IssuedApiKey:
    plaintext = _generate_key()
    try:
        # Encrypt before anything is written: a KMS outage must leave no row behind, and a row with
        # no encrypted copy (the original system's fallback) is never an option.
        encrypted = get_kms().encrypt(
            plaintext.encode("ascii"), aad=aad_for("tenant_api_keys", tenant_id, api_key_id)
        )
    except KmsUnavailable as exc:
        logger.warning("KMS is unavailable, no API key issued: %s", exc)
        raise ServiceUnavailable("KMS is unavailable; no API key was issued, retry later.") from exc
    row = TenantApiKey(
        api_key_id=api_key_id,
        tenant_id=tenant_id,
        api_key_hash=hash_api_key(plaintext),
        encrypted_api_key=encrypted,
        scopes=scopes,
        is_active=True,
        expires_at=expires_at,
        created_at=timezone.now(),
        name=name,
        key_prefix=_display_prefix(plaintext),
        created_by=created_by,
    )
    if if_absent:
        if _keys().upsert(row, update_fields=[]) == 0:
            raise AlreadyExists(f"API key {api_key_id} already exists; its key cannot be shown again")
    else:
        _keys().insert(row)
    return IssuedApiKey(row=row, plaintext=plaintext)


def _discard(row: TenantApiKey) -> None:
    """Best-effort removal of a just-issued key whose rotation lost: only if it still holds our key."""
    try:
        _keys().delete_where(filters={"api_key_id": row.api_key_id, "api_key_hash": row.api_key_hash})
    except BigQueryError:
        logger.exception("could not remove the orphan API key %s; revoke it by hand", row.api_key_id)


# --- helpers ----------------------------------------------------------------------------------------


def _usable_profile(tenant_id: str) -> TenantProfile:
    profile = central_repository(TenantProfile).find(tenant_id) if isinstance(tenant_id, str) else None
    if profile is None:
        raise DoesNotExist(f"tenant {tenant_id!r} does not exist")
    if profile.status in _CLOSED_TENANT_STATUSES:
        raise ValidationFailed(
            f"tenant {tenant_id} is {profile.status.lower()}: it cannot get API keys",
            errors={"tenant_id": [f"Tenant is {profile.status.lower()}."]},
        )
    return profile


def _tenant_key(tenant_id: str, api_key_id: str) -> TenantApiKey:
    # Filtered by tenant too: another tenant's key id answers exactly like a missing one.
    rows = _keys().list(filters={"api_key_id": api_key_id, "tenant_id": tenant_id}, limit=1)
    if not rows:
        raise DoesNotExist(f"API key {api_key_id!r} does not exist")
    row = rows[0]
    # Callers need the metadata and the hash only; the ciphertext never leaves this module.
    row.encrypted_api_key = None
    return row


def _check_text(errors: dict[str, list[str]], name: str, value: object, *, max_length: int) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        errors[name] = ["This field is required."]
    elif len(text) > max_length:
        errors[name] = [f"Use at most {max_length} characters."]
    return text


def _check_scopes(errors: dict[str, list[str]], scopes: object) -> list[str]:
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


def _within_creator_expiry(
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
            f"its own expiry, {creator_expires_at.isoformat()}."
        )
    return creator_expires_at


def _summary(errors: dict[str, list[str]]) -> str:
    return "invalid input: " + "; ".join(f"{name}: {' '.join(reasons)}" for name, reasons in errors.items())


def _describe(period: timedelta) -> str:
    seconds = int(period.total_seconds())
    if seconds == 0:
        return "0"
    if seconds % 86400 == 0:
        return f"{seconds // 86400} d"
    return f"{seconds // 3600} h"
