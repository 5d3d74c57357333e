"""Cloud credentials per tenant: validated per provider, KMS-encrypted and bound to their row, never shown.

Each payload is checked for its provider's shape (credential_payloads.py), serialised to canonical JSON
and encrypted with AAD `aad_for("tenant_cloud_credentials", tenant_id, credential_id)`: a ciphertext
copied to another row (or to another tenant) no longer decrypts. Responses use `credential_metadata`,
which never holds the payload or the ciphertext.

Rows written by the original system have NULL in our added columns; a NULL `is_active` counts as active.
"""

from __future__ import annotations

import datetime
import json
import logging
import uuid
from typing import Any

from django.utils import timezone

from bigquery_backend.repository import Repository
from tenants_app.kms import DecryptionFailed, KmsUnavailable, aad_for, get_kms
from tenants_app.models import (
    WORKING_TENANT_STATUSES,
    TenantCloudCredential,
    TenantProfile,
    ValidationStatus,
)
from tenants_app.repositories import central_repository
from tenants_app.services.actors import UNKNOWN_ACTOR
from tenants_app.services.audit import AuditAction, audit_record

# Re-exported: callers of the service know the payload limit from here.
from tenants_app.services.credential_payloads import MAX_PAYLOAD_BYTES as MAX_PAYLOAD_BYTES
from tenants_app.services.credential_payloads import credential_validate
from tenants_app.services.errors import (
    AlreadyExists,
    CredentialCorrupted,
    CredentialInactive,
    DoesNotExist,
    PlanLimitReached,
    ServiceError,
    ServiceUnavailable,
    SubscriptionInactive,
    TenantNotActive,
    ValidationFailed,
)
from tenants_app.services.notifications import CREDENTIAL_INVALID, notify
from tenants_app.services.plans import OPERATION_CONFIGURE
from tenants_app.services.quotas import subscription_require_active
from tenants_app.services.subscription_selectors import subscription_effective_limits
from tenants_app.services.text_rules import bidi_require_none

logger = logging.getLogger(__name__)

# The AAD's first part names the table, so a ciphertext from another table (an API key) never fits here.
AAD_TABLE = "tenant_cloud_credentials"
MAX_NAME_LENGTH = 100
MAX_ACTOR_LENGTH = 254
# The audit log needs an actor; callers that pass None (none in this code base) are recorded so.


# --- helpers ----------------------------------------------------------------------------------------
def _repository() -> Repository[TenantCloudCredential]:
    return central_repository(TenantCloudCredential)


def _is_active(row: TenantCloudCredential) -> bool:
    # NULL: a row of the original system, which had no way to deactivate a credential.
    return row.is_active is not False


def _aad(tenant_id: str, credential_id: str) -> bytes:
    return aad_for(AAD_TABLE, tenant_id, credential_id)


def _encrypt(canonical: bytes, *, tenant_id: str, credential_id: str) -> bytes:
    try:
        return get_kms().encrypt(canonical, aad=_aad(tenant_id, credential_id))
    except KmsUnavailable as exc:
        # The KMS message names the backend and the failure (a key file and what is wrong with it, for
        # the operator), never the plaintext; the response says only "unavailable".
        logger.warning(
            "credential encryption failed for tenant %s: %s: %s",
            tenant_id,
            type(exc).__name__,
            exc,
            extra={"tenant_id": tenant_id, "credential_id": credential_id},
        )
        raise ServiceUnavailable(
            "the key management service is unavailable: nothing was stored, try again later"
        ) from exc


def _not_found(credential_id: str) -> DoesNotExist:
    # The same answer for "missing" and "another tenant's": no existence leak.
    shown = credential_id if len(credential_id) <= 128 else f"{credential_id[:128]}..."
    return DoesNotExist(
        f"cloud credential {shown!r} does not exist", errors={"credential_id": ["Not found."]}
    )


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValidationFailed("the credential needs a name", errors={"name": ["This field is required."]})
    name = name.strip()
    # Named first: a bidi control is also unprintable, and the specific reason tells what to remove.
    bidi_require_none("name", name)
    if len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise ValidationFailed(
            "the credential name is too long or holds control characters",
            errors={"name": [f"At most {MAX_NAME_LENGTH} printable characters."]},
        )
    return name


def _check_actor(field: str, actor: object) -> str | None:
    if actor is None:
        return None
    if not isinstance(actor, str) or len(actor) > MAX_ACTOR_LENGTH:
        raise ValidationFailed(
            f"{field} must be a user id of at most {MAX_ACTOR_LENGTH} characters",
            errors={field: [f"At most {MAX_ACTOR_LENGTH} characters."]},
        )
    return actor


def _active_tenant(tenant_id: str) -> TenantProfile:
    profile = central_repository(TenantProfile).find(tenant_id) if isinstance(tenant_id, str) else None
    if profile is None:
        raise DoesNotExist(f"tenant {tenant_id!r} does not exist", errors={"tenant_id": ["Not found."]})
    if profile.status not in WORKING_TENANT_STATUSES:
        raise TenantNotActive(
            f"tenant {tenant_id!r} is {profile.status}: only ACTIVE or TRIAL tenants can change credentials"
        )
    return profile


def _max_providers(tenant_id: str) -> tuple[str, int]:
    """(plan name, provider limit in force) of the tenant: the plan's figure or a per-tenant override."""
    try:
        # The lifecycle rules decide (a trial past its last day counts as EXPIRED), one job.
        subscription = subscription_require_active(tenant_id=tenant_id, operation=OPERATION_CONFIGURE)
    except (SubscriptionInactive, DoesNotExist) as exc:
        raise PlanLimitReached(
            f"tenant {tenant_id!r} has no active subscription: cloud credentials need an ACTIVE or TRIAL "
            f"plan ({exc.message})"
        ) from exc
    limits = subscription_effective_limits(subscription=subscription)
    return limits.plan_name, limits.max_providers


def _active_rows(tenant_id: str) -> list[TenantCloudCredential]:
    rows = _repository().list(filters={"tenant_id": tenant_id}, order_by=("created_at",))
    return [row for row in rows if _is_active(row)]


def _conflict(
    rows: list[TenantCloudCredential], *, provider: str, name: str, plan: str, limit: int, own_id: str = ""
) -> ServiceError | None:
    """The rule `rows` (active, own row excluded) break if one more credential joins them."""
    others = [row for row in rows if row.credential_id != own_id]
    if any(row.provider == provider and row.credential_name == name for row in others):
        return AlreadyExists(
            f"an active {provider} credential named {name!r} already exists",
            errors={"name": ["An active credential of this provider already has this name."]},
        )
    providers = {row.provider for row in others}
    if provider not in providers and len(providers) >= limit:
        return PlanLimitReached(
            f"the {plan} plan allows credentials for {limit} cloud providers and {len(providers)} are "
            f"in use ({', '.join(sorted(providers))}): deactivate one or upgrade the plan",
            errors={"provider": [f"The {plan} plan allows {limit} providers."]},
        )
    return None


def _update_own(row: TenantCloudCredential, values: dict[str, Any]) -> None:
    """Apply `values` to the stored row and to `row`; NotFound-like if it went meanwhile."""
    # Conditional on the tenant too, so a row can never be rewritten through another tenant's id.
    filters = {"credential_id": row.credential_id, "tenant_id": row.tenant_id}
    if _repository().update_where(values, filters=filters) == 0:
        raise _not_found(row.credential_id)
    for field, value in values.items():
        setattr(row, field, value)


def _audit(
    action: AuditAction,
    actor: str | None,
    row: TenantCloudCredential,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    # Metadata and fingerprint only: the payload and its ciphertext never reach the audit log.
    audit_record(
        action=action,
        actor=actor or UNKNOWN_ACTOR,
        tenant_id=row.tenant_id,
        target_type="credential",
        target_id=row.credential_id,
        before=before,
        after=after,
    )


def _find_own(tenant_id: str, credential_id: str) -> TenantCloudCredential:
    rows = _repository().list(filters={"credential_id": credential_id, "tenant_id": tenant_id}, limit=1)
    if not rows:
        raise _not_found(credential_id)
    return rows[0]


# --- services ---------------------------------------------------------------------------------------
def credential_create(
    *, tenant_id: str, provider: str, name: str, payload: object, created_by: str | None
) -> TenantCloudCredential:
    """Validate, encrypt (bound to tenant and credential id) and store a new credential."""
    name = _check_name(name)
    created_by = _check_actor("created_by", created_by)
    validated = credential_validate(provider=provider, payload=payload)
    _active_tenant(tenant_id)
    plan, limit = _max_providers(tenant_id)
    conflict = _conflict(_active_rows(tenant_id), provider=provider, name=name, plan=plan, limit=limit)
    if conflict is not None:
        raise conflict

    credential_id = f"cred_{uuid.uuid4().hex}"
    # Encrypted before anything is written: a KMS outage leaves no row, never a plaintext one.
    ciphertext = _encrypt(validated.canonical, tenant_id=tenant_id, credential_id=credential_id)
    row = TenantCloudCredential(
        credential_id=credential_id,
        tenant_id=tenant_id,
        provider=provider,
        encrypted_credentials=ciphertext,
        created_by_user_id=created_by,
        updated_by_user_id=created_by,
        created_at=timezone.now(),
        credential_name=name,
        credential_type=validated.credential_type,
        fingerprint=validated.fingerprint,
        validation_status=ValidationStatus.VALID,
        is_active=True,
    )
    repository = _repository()
    repository.insert(row)

    # BigQuery has no unique constraint: re-check after the insert. A request that now sees a conflict
    # withdraws its own row, so two racing requests can both fail but never both succeed.
    conflict = _conflict(
        _active_rows(tenant_id), provider=provider, name=name, plan=plan, limit=limit, own_id=credential_id
    )
    if conflict is not None:
        repository.delete(credential_id)
        raise conflict

    _audit(AuditAction.CREDENTIAL_CREATE, created_by, row, after=credential_metadata(row))
    logger.info(
        "cloud credential %s created for tenant %s (%s, fingerprint %s)",
        credential_id,
        tenant_id,
        provider,
        validated.fingerprint,
        extra={"tenant_id": tenant_id, "credential_id": credential_id},
    )
    return row


def credential_list(*, tenant_id: str, include_inactive: bool = False) -> list[TenantCloudCredential]:
    """The tenant's credentials, oldest first; active ones only unless asked."""
    rows = _repository().list(filters={"tenant_id": tenant_id}, order_by=("created_at",))
    return rows if include_inactive else [row for row in rows if _is_active(row)]


def credential_get(*, tenant_id: str, credential_id: str) -> TenantCloudCredential:
    """One of the tenant's credentials; another tenant's is DoesNotExist, exactly like a missing one."""
    return _find_own(tenant_id, credential_id)


def credential_replace(
    *, tenant_id: str, credential_id: str, payload: object, updated_by: str | None
) -> TenantCloudCredential:
    """Rotate: validate for the same provider, re-encrypt under the same row binding, new fingerprint."""
    updated_by = _check_actor("updated_by", updated_by)
    row = _find_own(tenant_id, credential_id)
    if not _is_active(row):
        raise CredentialInactive(
            f"cloud credential {credential_id!r} is deactivated: create a new one instead"
        )
    validated = credential_validate(provider=row.provider, payload=payload)
    _active_tenant(tenant_id)
    ciphertext = _encrypt(validated.canonical, tenant_id=tenant_id, credential_id=credential_id)
    # "type", not "credential_type": the audit log drops credential-named keys as secret-sounding.
    before = {"type": row.credential_type, "fingerprint": row.fingerprint}
    values = {
        "encrypted_credentials": ciphertext,
        "credential_type": validated.credential_type,
        "fingerprint": validated.fingerprint,
        "validation_status": ValidationStatus.VALID,
        "updated_at": timezone.now(),
        "updated_by_user_id": updated_by,
    }
    _update_own(row, values)
    # The payload changed even when the fingerprint (of public identifiers) did not: both sides
    # are recorded as they are, not reduced to the fields that differ.
    _audit(
        AuditAction.CREDENTIAL_REPLACE,
        updated_by,
        row,
        before=before,
        after={"type": row.credential_type, "fingerprint": row.fingerprint},
    )
    logger.info(
        "cloud credential %s of tenant %s replaced (fingerprint %s)",
        credential_id,
        tenant_id,
        validated.fingerprint,
        extra={"tenant_id": tenant_id, "credential_id": credential_id},
    )
    return row


def credential_deactivate(
    *, tenant_id: str, credential_id: str, updated_by: str | None
) -> TenantCloudCredential:
    """Deactivate (kept for audit, no longer listed, decrypted or counted against the plan); idempotent."""
    updated_by = _check_actor("updated_by", updated_by)
    row = _find_own(tenant_id, credential_id)
    if not _is_active(row):
        return row
    values: dict[str, Any] = {
        "is_active": False,
        "updated_at": timezone.now(),
        "updated_by_user_id": updated_by,
    }
    _update_own(row, values)
    _audit(
        AuditAction.CREDENTIAL_DEACTIVATE,
        updated_by,
        row,
        before={"is_active": True},
        after={"is_active": False},
    )
    logger.info(
        "cloud credential %s of tenant %s deactivated",
        credential_id,
        tenant_id,
        extra={"tenant_id": tenant_id, "credential_id": credential_id},
    )
    return row


def credential_decrypt(*, tenant_id: str, credential_id: str) -> dict[str, Any]:
    """The plaintext payload, for pipeline workers only: never put it in a response or a log line."""
    row = _find_own(tenant_id, credential_id)
    if not _is_active(row):
        raise CredentialInactive(f"cloud credential {credential_id!r} is deactivated")
    try:
        plaintext = get_kms().decrypt(bytes(row.encrypted_credentials), aad=_aad(tenant_id, credential_id))
        payload = json.loads(plaintext)
    except KmsUnavailable as exc:
        raise ServiceUnavailable("the key management service is unavailable: try again later") from exc
    except (DecryptionFailed, ValueError) as exc:
        # Possibly tampering (a ciphertext copied from another row): loud, but without any payload.
        logger.error(
            "cloud credential %s of tenant %s does not decrypt for its row: %s",
            credential_id,
            tenant_id,
            type(exc).__name__,
            extra={"tenant_id": tenant_id, "credential_id": credential_id},
        )
        _notify_invalid(row)
        raise CredentialCorrupted(
            f"cloud credential {credential_id!r} cannot be decrypted: replace it with a new payload"
        ) from None
    if not isinstance(payload, dict):
        _notify_invalid(row)
        raise CredentialCorrupted(f"cloud credential {credential_id!r} does not hold a JSON object")
    return payload


def _notify_invalid(row: TenantCloudCredential) -> None:
    """The tenant hears that a stored credential failed (queued; ids and provider, never a value)."""
    notify(
        event=CREDENTIAL_INVALID,
        tenant_id=row.tenant_id,
        data={"credential_id": row.credential_id, "provider": row.provider, "name": row.credential_name},
    )


def credential_metadata(row: TenantCloudCredential) -> dict[str, Any]:
    """What responses may show: never the ciphertext, the payload or any field of it."""
    return {
        "credential_id": row.credential_id,
        "tenant_id": row.tenant_id,
        "provider": row.provider,
        "name": row.credential_name,
        "type": row.credential_type,
        "fingerprint": row.fingerprint,
        "validation_status": row.validation_status or ValidationStatus.UNVERIFIED,
        "is_active": _is_active(row),
        "created_at": _iso(row.created_at),
        "updated_at": _iso(row.updated_at),
        "created_by": row.created_by_user_id,
        "updated_by": row.updated_by_user_id,
    }


def _iso(value: datetime.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
