"""Cloud credentials per tenant: validated per provider, KMS-encrypted and bound to their row, never shown.

Each payload is checked for its provider's shape, serialised to canonical JSON and encrypted with AAD
`aad_for("tenant_cloud_credentials", tenant_id, credential_id)`: a ciphertext copied to another row (or to
another tenant) no longer decrypts. Responses use `credential_metadata`, which never holds the payload or
the ciphertext.

Validation is shape only (`validation_status` VALID means "well-formed"): nothing here calls the provider,
so a revoked-but-well-formed key is still VALID until a pipeline worker uses it.

Rows written by the original system have NULL in our added columns; a NULL `is_active` counts as active.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from bigquery_backend.repository import Repository
from tenants_app import secret_shapes
from tenants_app.kms import DecryptionFailed, KmsUnavailable, aad_for, get_kms
from tenants_app.models import (
    CredentialType,
    Provider,
    TenantCloudCredential,
    TenantProfile,
    TenantStatus,
    ValidationStatus,
)
from tenants_app.repositories import central_repository
from tenants_app.services.audit import AuditAction, audit_record
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
from tenants_app.services.subscriptions import subscription_effective_limits
from tenants_app.services.text_rules import bidi_require_none

logger = logging.getLogger(__name__)

# The AAD's first part names the table, so a ciphertext from another table (an API key) never fits here.
AAD_TABLE = "tenant_cloud_credentials"
# Cloud KMS refuses larger plaintexts (tenants_app.kms.MAX_PLAINTEXT_BYTES); a real payload is < 4 KiB.
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_NAME_LENGTH = 100
MAX_ACTOR_LENGTH = 254
# The audit log needs an actor; callers that pass None (none in this code base) are recorded so.
UNKNOWN_ACTOR = "system:unknown"
# A 4096-bit RSA PEM is about 3.3 KiB; anything far larger is not a service-account key.
MAX_PRIVATE_KEY_LENGTH = 16 * 1024
MAX_FIELD_LENGTH = 2048
# Versioned so that a future fingerprint scheme can never collide with this one.
FINGERPRINT_VERSION = "v1"
FINGERPRINT_HEX_CHARS = 16

TENANT_STATUSES_ALLOWED = (TenantStatus.ACTIVE, TenantStatus.TRIAL)

# Azure: a client secret is not sent to Azure's APIs; it is exchanged at Entra ID for OAuth 2.0 access
# tokens (client-credentials grant). OAUTH tells a worker it must do that exchange first.
CREDENTIAL_TYPES: dict[str, str] = {
    Provider.GCP: CredentialType.SERVICE_ACCOUNT,
    Provider.AWS: CredentialType.ACCESS_KEY,
    Provider.AZURE: CredentialType.OAUTH,
    Provider.OPENAI: CredentialType.API_KEY,
    Provider.ANTHROPIC: CredentialType.API_KEY,
}

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
# The shapes of secrets are written once (secret_shapes), so what we accept the detectors also find.
_AWS_ACCESS_KEY_ID = secret_shapes.AWS_ACCESS_KEY_ID_SHAPE
_AWS_SECRET = secret_shapes.AWS_SECRET_ACCESS_KEY_SHAPE
_AWS_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$")
_OPENAI_KEY = secret_shapes.OPENAI_KEY_SHAPE
_ANTHROPIC_KEY = secret_shapes.ANTHROPIC_KEY_SHAPE
# Project ids, optionally domain-scoped ("example.com:my-project").
_GCP_PROJECT_ID = re.compile(r"^([a-z0-9.-]+:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_GCP_PRIVATE_KEY_ID = re.compile(r"^[A-Za-z0-9]{8,128}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PEM_BEGIN = secret_shapes.PEM_PRIVATE_KEY_BEGIN
_PEM_END = secret_shapes.PEM_PRIVATE_KEY_END
# Only field names like these are repeated back in errors; anything else could be pasted secret text.
_SAFE_FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,39}$")

_GCP_REQUIRED = ("type", "project_id", "private_key_id", "private_key", "client_email", "token_uri")
# Every other field of the JSON key file Google hands out; all are strings.
_GCP_OPTIONAL = (
    "client_id",
    "auth_uri",
    "auth_provider_x509_cert_url",
    "client_x509_cert_url",
    "universe_domain",
)
_GCP_URL_FIELDS = ("token_uri", "auth_uri", "auth_provider_x509_cert_url", "client_x509_cert_url")


@dataclass(frozen=True)
class ValidatedPayload:
    """A payload that passed its provider's checks: canonical bytes to encrypt and what may be shown."""

    provider: str
    credential_type: str
    canonical: bytes
    fingerprint: str


# --- validation -------------------------------------------------------------------------------------
class _Errors:
    """Collects field errors; messages describe the rule, never the value that broke it."""

    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}

    def add(self, field: str, message: str) -> None:
        self.errors.setdefault(field, []).append(message)

    def raise_if_any(self, provider: str) -> None:
        if self.errors:
            fields = ", ".join(sorted(self.errors))
            raise ValidationFailed(f"invalid {provider} credential: check {fields}", errors=self.errors)


def _parse_payload(payload: object) -> dict[str, Any]:
    if isinstance(payload, bytes | bytearray):
        try:
            payload = bytes(payload).decode("utf-8")
        except UnicodeDecodeError:
            raise ValidationFailed(
                "the credential payload is not UTF-8 text", errors={"payload": ["Send UTF-8 JSON."]}
            ) from None
    if isinstance(payload, str):
        if not _is_unicode_text(payload):
            raise ValidationFailed(
                "the credential payload is not valid text", errors={"payload": ["Send UTF-8 JSON."]}
            )
        # Checked before parsing, so an oversized body costs no parse.
        if len(payload.encode("utf-8")) > MAX_PAYLOAD_BYTES:
            raise _too_large()
        try:
            payload = json.loads(payload)
        except (ValueError, RecursionError):
            # The parser's message quotes the text around the error, which may be the secret.
            raise ValidationFailed(
                "the credential payload is not valid JSON", errors={"payload": ["Send a JSON object."]}
            ) from None
    if not isinstance(payload, Mapping):
        raise ValidationFailed(
            "the credential payload must be a JSON object", errors={"payload": ["Send a JSON object."]}
        )
    return dict(payload)


def _too_large() -> ValidationFailed:
    return ValidationFailed(
        f"the credential payload is larger than {MAX_PAYLOAD_BYTES} bytes",
        errors={"payload": [f"At most {MAX_PAYLOAD_BYTES} bytes."]},
    )


def _check_fields(
    data: Mapping[str, Any], errors: _Errors, *, required: tuple[str, ...], optional: tuple[str, ...]
) -> None:
    """Required fields present, no unknown ones: a typo ("secret_key") must not be stored silently."""
    for name in required:
        if data.get(name) in (None, ""):
            errors.add(name, "This field is required.")
    unknown = [name for name in data if name not in required and name not in optional]
    for name in unknown:
        if isinstance(name, str) and _SAFE_FIELD_NAME.fullmatch(name):
            errors.add(name, "Unknown field.")
        else:
            errors.add("payload", "Holds a field with an unexpected name.")
    for name in (*required, *optional):
        value = data.get(name)
        if value is not None and not isinstance(value, str):
            errors.add(name, "Must be a string.")
        elif isinstance(value, str) and not _is_unicode_text(value):
            errors.add(name, "Must be valid Unicode text.")


def _is_unicode_text(value: str) -> bool:
    # JSON can carry lone surrogates ("\ud800") that no encoder accepts: refuse them as input.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _string(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    return value if isinstance(value, str) and value != "" else None


def _check_pattern(
    data: Mapping[str, Any], errors: _Errors, name: str, pattern: re.Pattern[str], rule: str
) -> None:
    value = _string(data, name)
    if value is not None and not pattern.fullmatch(value):
        errors.add(name, rule)


def _validate_gcp(data: dict[str, Any]) -> dict[str, Any]:
    errors = _Errors()
    _check_fields(data, errors, required=_GCP_REQUIRED, optional=_GCP_OPTIONAL)
    if _string(data, "type") is not None and data["type"] != "service_account":
        errors.add("type", 'Must be "service_account" (a service-account JSON key file).')
    _check_pattern(data, errors, "project_id", _GCP_PROJECT_ID, "Must be a Google Cloud project id.")
    _check_pattern(
        data, errors, "private_key_id", _GCP_PRIVATE_KEY_ID, "Must be the key file's private_key_id (hex)."
    )
    private_key = _string(data, "private_key")
    if private_key is not None and (
        not private_key.startswith(_PEM_BEGIN)
        or _PEM_END not in private_key
        or len(private_key) > MAX_PRIVATE_KEY_LENGTH
    ):
        errors.add("private_key", f"Must be a PEM private key ({_PEM_BEGIN} ... {_PEM_END}).")
    client_email = _string(data, "client_email")
    if client_email is not None and (
        len(client_email) > MAX_ACTOR_LENGTH or not _EMAIL.fullmatch(client_email)
    ):
        errors.add("client_email", "Must be the service account's e-mail (...@...iam.gserviceaccount.com).")
    for name in _GCP_URL_FIELDS:
        url = _string(data, name)
        if url is not None and (not url.startswith("https://") or len(url) > MAX_FIELD_LENGTH):
            errors.add(name, "Must be an https:// URL.")
    for name in ("client_id", "universe_domain"):
        value = _string(data, name)
        if value is not None and len(value) > MAX_FIELD_LENGTH:
            errors.add(name, f"At most {MAX_FIELD_LENGTH} characters.")
    errors.raise_if_any(Provider.GCP)
    # The whole key file is kept (google-auth wants it as issued), minus empty optional fields.
    return {name: value for name, value in data.items() if value not in (None, "")}


def _validate_aws(data: dict[str, Any]) -> dict[str, Any]:
    errors = _Errors()
    _check_fields(
        data,
        errors,
        required=("access_key_id", "secret_access_key"),
        optional=("region", "session_token"),
    )
    _check_pattern(
        data,
        errors,
        "access_key_id",
        _AWS_ACCESS_KEY_ID,
        "Must be an AWS access key id: AKIA or ASIA and 16 capital letters or digits.",
    )
    _check_pattern(
        data,
        errors,
        "secret_access_key",
        _AWS_SECRET,
        "Must be the 40-character secret access key (letters, digits, '/' and '+').",
    )
    _check_pattern(data, errors, "region", _AWS_REGION, "Must be an AWS region such as us-east-1.")
    access_key_id = _string(data, "access_key_id") or ""
    session_token = _string(data, "session_token")
    # ASIA ids are temporary STS credentials: without their session token AWS refuses every call.
    if access_key_id.startswith("ASIA") and session_token is None:
        errors.add("session_token", "Required with a temporary (ASIA...) access key id.")
    if session_token is not None and len(session_token) > MAX_PAYLOAD_BYTES // 8:
        errors.add("session_token", f"At most {MAX_PAYLOAD_BYTES // 8} characters.")
    errors.raise_if_any(Provider.AWS)
    return _known(data, ("access_key_id", "secret_access_key", "region", "session_token"))


def _validate_azure(data: dict[str, Any]) -> dict[str, Any]:
    errors = _Errors()
    _check_fields(
        data, errors, required=("tenant_id", "client_id", "client_secret"), optional=("subscription_id",)
    )
    for name in ("tenant_id", "client_id", "subscription_id"):
        _check_pattern(data, errors, name, _UUID, "Must be a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx).")
    secret = _string(data, "client_secret")
    if secret is not None:
        if secret != secret.strip():
            # Refused rather than trimmed: we never alter a secret behind the user's back.
            errors.add("client_secret", "Remove the leading or trailing whitespace.")
        elif len(secret) > MAX_FIELD_LENGTH or not secret.isprintable():
            errors.add("client_secret", "Must be the client secret's value (printable, one line).")
    errors.raise_if_any(Provider.AZURE)
    return _known(data, ("tenant_id", "client_id", "client_secret", "subscription_id"))


def _validate_api_key(
    provider: str, pattern: re.Pattern[str], rule: str
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def validate(data: dict[str, Any]) -> dict[str, Any]:
        errors = _Errors()
        _check_fields(data, errors, required=("api_key",), optional=())
        api_key = _string(data, "api_key")
        if api_key is not None:
            if len(api_key) > MAX_FIELD_LENGTH or not pattern.fullmatch(api_key):
                errors.add("api_key", rule)
            elif provider == Provider.OPENAI and api_key.startswith("sk-ant-"):
                # Both shapes start with sk-; an Anthropic key under OPENAI is a mix-up worth naming.
                errors.add("api_key", "This is an Anthropic key; store it under provider ANTHROPIC.")
        errors.raise_if_any(provider)
        return _known(data, ("api_key",))

    return validate


def _known(data: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {name: data[name] for name in names if data.get(name) not in (None, "")}


_VALIDATORS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    Provider.GCP: _validate_gcp,
    Provider.AWS: _validate_aws,
    Provider.AZURE: _validate_azure,
    Provider.OPENAI: _validate_api_key(
        Provider.OPENAI, _OPENAI_KEY, "Must be an OpenAI API key: sk- and at least 20 more characters."
    ),
    Provider.ANTHROPIC: _validate_api_key(
        Provider.ANTHROPIC,
        _ANTHROPIC_KEY,
        "Must be an Anthropic API key: sk-ant- and at least 20 more characters.",
    ),
}


def _fingerprint_parts(provider: str, data: Mapping[str, str]) -> tuple[str, ...]:
    """What the fingerprint hashes: identifiers the provider itself shows, never enough to guess a secret.

    GCP: client_email and private_key_id (listed in the IAM console, sent in every signed JWT); AWS: the
    access key id (AWS documents it as not secret); Azure: tenant and client ids plus the secret's last 4
    characters (one app can hold several secrets); OpenAI/Anthropic: the key's last 4 characters, the
    same hint their consoles show. Someone holding a fingerprint learns at most those last 4 characters,
    which leaves 16+ random characters unknown.
    """
    if provider == Provider.GCP:
        return (data["client_email"], data["private_key_id"])
    if provider == Provider.AWS:
        return (data["access_key_id"],)
    if provider == Provider.AZURE:
        return (data["tenant_id"].lower(), data["client_id"].lower(), data["client_secret"][-4:])
    return (data["api_key"][-4:],)


def credential_fingerprint(*, provider: str, payload: Mapping[str, str]) -> str:
    """Short, safe-to-show fingerprint of a validated payload (16 hex of sha256 over identifiers)."""
    parts = (FINGERPRINT_VERSION, provider, *_fingerprint_parts(provider, payload))
    # aad_for's length-prefixing keeps ("ab", "c") and ("a", "bc") apart here too.
    return hashlib.sha256(aad_for(*parts)).hexdigest()[:FINGERPRINT_HEX_CHARS]


def credential_validate(*, provider: str, payload: object) -> ValidatedPayload:
    """Check `payload` for `provider`'s shape; ValidationFailed names the fields, never their values."""
    if provider not in _VALIDATORS:
        raise ValidationFailed(
            f"unknown provider: choose one of {', '.join(_VALIDATORS)}",
            errors={"provider": [f"Choose one of {', '.join(_VALIDATORS)}."]},
        )
    data = _VALIDATORS[provider](_parse_payload(payload))
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(canonical) > MAX_PAYLOAD_BYTES:
        raise _too_large()
    return ValidatedPayload(
        provider=provider,
        credential_type=CREDENTIAL_TYPES[provider],
        canonical=canonical,
        fingerprint=credential_fingerprint(provider=provider, payload=data),
    )


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
    if profile.status not in TENANT_STATUSES_ALLOWED:
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
