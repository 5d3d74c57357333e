"""Rotating a tenant API key: a replacement with the same scopes, named after the old key, while the old
key works for a grace period (issuing, listing and revoking are api_keys.py).

A rotation is safe to retry: the replacement's id derives from the old key's (`replacement_key_id`), one
conditional UPDATE of the old key links the two, and a retry of a request whose answer was lost finds
its replacement (and, for the same caller, shows its key again). Rotating makes the old key's cached
verifications stale at once (`api_key_forget`).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from django.utils import timezone
from google.cloud import bigquery

from bigquery_backend.exceptions import BigQueryError
from bigquery_backend.identifiers import quote_column
from bigquery_backend.models import model_replace
from tenants_app.kms import KmsUnavailable, aad_for, get_kms
from tenants_app.models import TenantApiKey
from tenants_app.services.api_key_scopes import within_creator_expiry
from tenants_app.services.api_key_verification import _keys, api_key_forget, bigquery_errors_translated
from tenants_app.services.api_keys import (
    ACTOR_MAX_LENGTH,
    NAME_MAX_LENGTH,
    IssuedApiKey,
    api_key_audit_data,
    audit_missing,
    check_text,
    errors_summary,
    issue_key,
    tenant_key_row,
    usable_tenant_profile,
)
from tenants_app.services.audit import AuditAction, audit_record
from tenants_app.services.errors import AlreadyExists, ScopeNotHeld, ServiceUnavailable, ValidationFailed
from tenants_app.services.retries import is_retry_of_unknown_outcome
from tenants_app.services.text_rules import BIDI_CONTROLS

logger = logging.getLogger(__name__)

# How long a rotated key keeps working, by the code the API and the portal take for it.
ROTATION_GRACE_CHOICES: dict[str, timedelta] = {
    "0": timedelta(0),
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
}
ROTATION_GRACE_PERIODS: tuple[timedelta, ...] = tuple(ROTATION_GRACE_CHOICES.values())

# A replacement is named after its predecessor: "CI deploys (rotated 2026-12-03)", the UTC date.
_ROTATED_SUFFIX = re.compile(r"\s*\(rotated \d{4}-\d{2}-\d{2}\)$")
# The name of a replacement whose predecessor had none (keys of the original system).
UNNAMED_KEY = "API key"

# Namespace of replacement key ids (uuid5): fixed, so an id is the same in every process and release.
_ROTATION_NAMESPACE = uuid.UUID("6f1c1f0e-4a43-5d27-9a53-3c1b8f5d2a10")


def replacement_key_id(*, tenant_id: str, api_key_id: str) -> str:
    """The id a rotation of this key gives its replacement: one per key, so a retried rotation finds it."""
    return uuid.uuid5(_ROTATION_NAMESPACE, f"{tenant_id}/{api_key_id}").hex


def rotated_key_name(*, name: str | None, rotated_at: datetime) -> str:
    """A replacement's name: its predecessor's, with the rotation's UTC date as the only suffix.

    A name that already ends in a rotation suffix gets the new date instead of a second suffix, a long
    name is cut so that the suffix always fits in NAME_MAX_LENGTH, and bidi control characters
    (text_rules.BIDI_CONTROLS) are left out.
    """
    suffix = f" (rotated {rotated_at.astimezone(UTC).date().isoformat()})"
    # A key stored before bidi controls were refused in names keeps its name, but its replacement is a
    # new name, written now: it gets the rule, by dropping them (refusing would make the key unrotatable).
    visible = "".join(character for character in name or "" if character not in BIDI_CONTROLS)
    base = _ROTATED_SUFFIX.sub("", visible.strip()) or UNNAMED_KEY
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
    clean_rotated_by = check_text(errors, "rotated_by", rotated_by, max_length=ACTOR_MAX_LENGTH)
    if errors:
        raise ValidationFailed(errors_summary(errors), errors=errors)

    replacement_id = replacement_key_id(tenant_id=tenant_id, api_key_id=api_key_id)
    with bigquery_errors_translated():
        profile = usable_tenant_profile(tenant_id)
        old = tenant_key_row(tenant_id, api_key_id)
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
            expires_at=within_creator_expiry(old.expires_at, max_expires_at, refuse_later=False),
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
        return issue_key(**arguments)
    except AlreadyExists:
        pass
    # A row is there while the old key is not linked to it: an attempt that failed before linking
    # (nobody ever saw its key), or one still running. Deleting it makes a running attempt's link
    # fail (its key is no longer stored), so exactly one of the two wins either way.
    _delete_unlinked_replacement(old, replacement_id)
    try:
        return issue_key(**arguments)
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
    if audit_missing(action=AuditAction.API_KEY_ROTATE, tenant_id=old.tenant_id, target_id=old.api_key_id):
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


def _dml(sql: str, parameters: list[Any]) -> int:
    return _keys().gateway.query(sql, parameters).affected_rows or 0


def _discard(row: TenantApiKey) -> None:
    """Best-effort removal of a just-issued key whose rotation lost: only if it still holds our key."""
    try:
        _keys().delete_where(filters={"api_key_id": row.api_key_id, "api_key_hash": row.api_key_hash})
    except BigQueryError:
        logger.exception("could not remove the orphan API key %s; revoke it by hand", row.api_key_id)


def _describe(period: timedelta) -> str:
    """A grace period as errors and the audit log name it: "0", "1 h", "7 d"."""
    seconds = int(period.total_seconds())
    if seconds == 0:
        return "0"
    if seconds % 86400 == 0:
        return f"{seconds // 86400} d"
    return f"{seconds // 3600} h"
