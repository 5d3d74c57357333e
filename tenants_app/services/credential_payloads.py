"""The payload shapes of cloud credentials, per provider, written once: what each holds, what is secret,
and the checks a payload must pass before it is encrypted (services/credentials.py stores it).

`PAYLOAD_FIELDS` declares each provider's fields (name, label as the provider's console shows it,
required, secret); the validators here and the portal's provider-shaped forms both read it, so a field
the form offers is one the service accepts.

Validation is shape only (`validation_status` VALID means "well-formed"): nothing here calls the provider,
so a revoked-but-well-formed key is still VALID until a pipeline worker uses it. Errors name the field and
the rule, never the value that broke it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tenants_app import secret_shapes
from tenants_app.kms import aad_for
from tenants_app.models import CredentialType, Provider
from tenants_app.services.errors import ValidationFailed

# Cloud KMS refuses larger plaintexts (tenants_app.kms.MAX_PLAINTEXT_BYTES); a real payload is < 4 KiB.
MAX_PAYLOAD_BYTES = 64 * 1024
# A 4096-bit RSA PEM is about 3.3 KiB; anything far larger is not a service-account key.
MAX_PRIVATE_KEY_LENGTH = 16 * 1024
MAX_FIELD_LENGTH = 2048
# RFC 5321's bound on an address.
MAX_EMAIL_LENGTH = 254
# Versioned so that a future fingerprint scheme can never collide with this one.
FINGERPRINT_VERSION = "v1"
FINGERPRINT_HEX_CHARS = 16


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


@dataclass(frozen=True)
class PayloadField:
    """One field of a provider's payload: its JSON name, and its label as the provider's console shows it."""

    name: str
    label: str
    required: bool = True
    # Never shown back, not even in a form re-shown after an error.
    secret: bool = False


PAYLOAD_FIELDS: dict[str, tuple[PayloadField, ...]] = {
    # The JSON key file Google hands out, field for field; all are strings.
    Provider.GCP: (
        PayloadField("type", "Type"),
        PayloadField("project_id", "Project ID"),
        PayloadField("private_key_id", "Private key ID"),
        PayloadField("private_key", "Private key", secret=True),
        PayloadField("client_email", "Client e-mail"),
        PayloadField("token_uri", "Token URI"),
        PayloadField("client_id", "Client ID", required=False),
        PayloadField("auth_uri", "Auth URI", required=False),
        PayloadField("auth_provider_x509_cert_url", "Auth provider certificate URL", required=False),
        PayloadField("client_x509_cert_url", "Client certificate URL", required=False),
        PayloadField("universe_domain", "Universe domain", required=False),
    ),
    Provider.AWS: (
        PayloadField("access_key_id", "Access key ID"),
        PayloadField("secret_access_key", "Secret access key", secret=True),
        PayloadField("region", "Region", required=False),
        PayloadField("session_token", "Session token", required=False, secret=True),
    ),
    Provider.AZURE: (
        PayloadField("tenant_id", "Directory (tenant) ID"),
        PayloadField("client_id", "Application (client) ID"),
        PayloadField("client_secret", "Client secret value", secret=True),
        PayloadField("subscription_id", "Subscription ID", required=False),
    ),
    Provider.OPENAI: (PayloadField("api_key", "API key", secret=True),),
    Provider.ANTHROPIC: (PayloadField("api_key", "API key", secret=True),),
}
_GCP_URL_FIELDS = ("token_uri", "auth_uri", "auth_provider_x509_cert_url", "client_x509_cert_url")


def payload_field(provider: str, name: str) -> PayloadField | None:
    """The declared field `name` of `provider`'s payload, if there is one."""
    return next((field for field in PAYLOAD_FIELDS.get(provider, ()) if field.name == name), None)


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


def _check_fields(data: Mapping[str, Any], errors: _Errors, provider: str) -> None:
    """Required fields present, no unknown ones: a typo ("secret_key") must not be stored silently."""
    fields = PAYLOAD_FIELDS[provider]
    for field in fields:
        if field.required and data.get(field.name) in (None, ""):
            errors.add(field.name, "This field is required.")
    known = {field.name for field in fields}
    for name in data:
        if name in known:
            continue
        if isinstance(name, str) and _SAFE_FIELD_NAME.fullmatch(name):
            errors.add(name, "Unknown field.")
        else:
            errors.add("payload", "Holds a field with an unexpected name.")
    for field in fields:
        value = data.get(field.name)
        if value is not None and not isinstance(value, str):
            errors.add(field.name, "Must be a string.")
        elif isinstance(value, str) and not _is_unicode_text(value):
            errors.add(field.name, "Must be valid Unicode text.")


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
    _check_fields(data, errors, Provider.GCP)
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
        len(client_email) > MAX_EMAIL_LENGTH or not _EMAIL.fullmatch(client_email)
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
    _check_fields(data, errors, Provider.AWS)
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
    return _known(data, Provider.AWS)


def _validate_azure(data: dict[str, Any]) -> dict[str, Any]:
    errors = _Errors()
    _check_fields(data, errors, Provider.AZURE)
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
    return _known(data, Provider.AZURE)


def _validate_api_key(
    provider: str, pattern: re.Pattern[str], rule: str
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def validate(data: dict[str, Any]) -> dict[str, Any]:
        errors = _Errors()
        _check_fields(data, errors, provider)
        api_key = _string(data, "api_key")
        if api_key is not None:
            if len(api_key) > MAX_FIELD_LENGTH or not pattern.fullmatch(api_key):
                errors.add("api_key", rule)
            elif provider == Provider.OPENAI and api_key.startswith("sk-ant-"):
                # Both shapes start with sk-; an Anthropic key under OPENAI is a mix-up worth naming.
                errors.add("api_key", "This is an Anthropic key; store it under provider ANTHROPIC.")
        errors.raise_if_any(provider)
        return _known(data, provider)

    return validate


def _known(data: Mapping[str, Any], provider: str) -> dict[str, Any]:
    return {
        field.name: data[field.name]
        for field in PAYLOAD_FIELDS[provider]
        if data.get(field.name) not in (None, "")
    }


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
