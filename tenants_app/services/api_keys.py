"""Tenant API keys: issue, list and revoke (rotating them is api_key_rotation.py, their scopes
api_key_scopes.py, verifying them api_key_verification.py).

A key is `cvg_{env}_{40 base62 chars}` (about 238 random bits), shown exactly once. BigQuery stores its
sha256 hex (lookups go by hash), a display prefix and a KMS-encrypted copy; never the key itself.
Revoking or rotating a key makes its cached verifications stale at once (`api_key_forget`).
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils import timezone

from bigquery_backend.repository import Page
from tenants_app import secret_shapes
from tenants_app.kms import KmsUnavailable, aad_for, get_kms
from tenants_app.models import (
    CLOSED_TENANT_STATUSES,
    AuditLogEntry,
    TenantApiKey,
    TenantProfile,
)
from tenants_app.repositories import central_repository
from tenants_app.secrets import is_sensitive_name
from tenants_app.services.api_key_scopes import check_scopes, within_creator_expiry
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
    ServiceUnavailable,
    ValidationFailed,
)
from tenants_app.services.retries import has_request_seed, is_retry_of_unknown_outcome, stable_id
from tenants_app.services.text_rules import bidi_check

logger = logging.getLogger(__name__)

# The key's shape is written once (secret_shapes): what we issue is what the log masking finds.
KEY_PREFIX = secret_shapes.OUR_KEY_PREFIX
RANDOM_LENGTH = secret_shapes.OUR_KEY_RANDOM_LENGTH
DISPLAY_RANDOM_CHARS = 6
_KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")

NAME_MAX_LENGTH = 100
REASON_MAX_LENGTH = 500
ACTOR_MAX_LENGTH = 254


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
    clean_name = check_text(errors, "name", name, max_length=NAME_MAX_LENGTH)
    bidi_check(errors, "name", clean_name)
    clean_scopes = check_scopes(errors, scopes)
    clean_created_by = check_text(errors, "created_by", created_by, max_length=ACTOR_MAX_LENGTH)
    if expires_at is not None:
        if not isinstance(expires_at, datetime) or timezone.is_naive(expires_at):
            errors["expires_at"] = ["Give a timezone-aware date and time."]
        elif expires_at <= timezone.now():
            errors["expires_at"] = ["Must be in the future."]
    if api_key_id is not None and not (isinstance(api_key_id, str) and _KEY_ID_PATTERN.fullmatch(api_key_id)):
        errors["api_key_id"] = ["Use 1-128 letters, digits, '_' or '-'."]
    if errors:
        raise ValidationFailed(errors_summary(errors), errors=errors)
    expires_at = within_creator_expiry(expires_at, max_expires_at, refuse_later=True)

    derived = api_key_id is None
    chosen_id = api_key_id or stable_id("api_key")
    with bigquery_errors_translated():
        profile = usable_tenant_profile(tenant_id)
        try:
            issued = issue_key(
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
            if record_audit and audit_missing(
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


# What a listing reads: every column but the hash and the ciphertext, which stay in BigQuery.
_LISTED_FIELDS = tuple(
    field.name for field in TenantApiKey._meta.concrete_fields if not is_sensitive_name(field.name)
)


def api_key_list(
    *, tenant_id: str, include_revoked: bool = False, limit: int = 50, offset: int = 0
) -> Page[TenantApiKey]:
    """One page of the tenant's keys, newest first, and their total (two jobs, paged in BigQuery):
    revoked keys pile up with every rotation. Rows carry the display prefix, never a key or its hash."""
    filters: dict[str, Any] = {"tenant_id": tenant_id}
    if not include_revoked:
        filters["is_active"] = True
    with bigquery_errors_translated():
        return _keys().page(
            filters=filters,
            order_by=("-created_at", "api_key_id"),
            limit=limit,
            offset=offset,
            fields=_LISTED_FIELDS,
        )


def api_key_revoke(*, tenant_id: str, api_key_id: str, reason: str, revoked_by: str) -> TenantApiKey:
    """Revoke a key for good; it stops working in every process at once (see api_key_verification)."""
    errors: dict[str, list[str]] = {}
    clean_reason = check_text(errors, "reason", reason, max_length=REASON_MAX_LENGTH)
    clean_revoked_by = check_text(errors, "revoked_by", revoked_by, max_length=ACTOR_MAX_LENGTH)
    if errors:
        raise ValidationFailed(errors_summary(errors), errors=errors)

    with bigquery_errors_translated():
        row = tenant_key_row(tenant_id, api_key_id)
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


def issue_key(
    *,
    tenant_id: str,
    api_key_id: str,
    name: str,
    scopes: list[str],
    created_by: str,
    expires_at: datetime | None,
    if_absent: bool,
) -> IssuedApiKey:
    """Store a new key's row (hash, display prefix, encrypted copy) for creation and rotation alike.

    With `if_absent`, AlreadyExists when the id is taken (one MERGE); else a plain INSERT.
    """
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


# --- helpers (api_key_rotation.py uses them too) ---------------------------------------------------
def usable_tenant_profile(tenant_id: str) -> TenantProfile:
    """The tenant's profile if it may hold keys: it exists and is not closed."""
    profile = central_repository(TenantProfile).find(tenant_id) if isinstance(tenant_id, str) else None
    if profile is None:
        raise DoesNotExist(f"tenant {tenant_id!r} does not exist")
    if profile.status in CLOSED_TENANT_STATUSES:
        raise ValidationFailed(
            f"tenant {tenant_id} is {profile.status.lower()}: it cannot get API keys",
            errors={"tenant_id": [f"Tenant is {profile.status.lower()}."]},
        )
    return profile


def tenant_key_row(tenant_id: str, api_key_id: str) -> TenantApiKey:
    """One key of one tenant, without its ciphertext; DoesNotExist otherwise."""
    # Filtered by tenant too: another tenant's key id answers exactly like a missing one.
    rows = _keys().list(filters={"api_key_id": api_key_id, "tenant_id": tenant_id}, limit=1)
    if not rows:
        raise DoesNotExist(f"API key {api_key_id!r} does not exist")
    row = rows[0]
    # Callers need the metadata and the hash only; the ciphertext never leaves this function.
    row.encrypted_api_key = None
    return row


def check_text(errors: dict[str, list[str]], name: str, value: object, *, max_length: int) -> str:
    """The stripped text; a missing or too long one is reported in `errors` under `name`."""
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        errors[name] = ["This field is required."]
    elif len(text) > max_length:
        errors[name] = [f"Use at most {max_length} characters."]
    return text


def errors_summary(errors: dict[str, list[str]]) -> str:
    """The message of a ValidationFailed: every field and its reasons."""
    return "invalid input: " + "; ".join(f"{name}: {' '.join(reasons)}" for name, reasons in errors.items())


def audit_missing(*, action: AuditAction, tenant_id: str, target_id: str) -> bool:
    """No audit entry for this change yet (one job; only on the retry of a failed request)."""
    filters = {"action": action, "tenant_id": tenant_id, "target_id": target_id}
    return central_repository(AuditLogEntry).count(filters=filters) == 0
