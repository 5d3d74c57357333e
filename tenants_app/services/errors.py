"""Service-level errors: each maps to one HTTP status in the API's single error handler."""

from __future__ import annotations


class ServiceError(Exception):
    """Base class; `status` is the HTTP status the API answers with, `code` a stable machine name."""

    status = 400
    code = "invalid"

    def __init__(self, message: str, *, errors: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors or {}


class ValidationFailed(ServiceError):
    """Input is wrong; `errors` names each field and the reason."""

    status = 400
    code = "validation_failed"


class AlreadyExists(ServiceError):
    status = 409
    code = "already_exists"


class DoesNotExist(ServiceError):
    status = 404
    code = "not_found"


class PlanLimitReached(ServiceError):
    """The tenant's plan does not allow this (for example one more cloud provider)."""

    status = 403
    code = "plan_limit_reached"


class ServiceUnavailable(ServiceError):
    """BigQuery or KMS cannot be reached: the request failed and nothing was stored."""

    status = 503
    code = "unavailable"


# --- API keys ---------------------------------------------------------------------------------------
class ApiKeyInvalid(ServiceError):
    """Malformed or unknown key. Messages never echo the key."""

    status = 401
    code = "api_key_invalid"


class ApiKeyRevoked(ServiceError):
    status = 401
    code = "api_key_revoked"


class ApiKeyExpired(ServiceError):
    status = 401
    code = "api_key_expired"


class ScopeNotHeld(ServiceError):
    """A tenant key tried to obtain, through another key, a scope it does not hold itself."""

    status = 403
    code = "permission_denied"


class TenantSuspended(ServiceError):
    """The key is fine but its tenant may not use the API (suspended, cancelled or deleted)."""

    status = 403
    code = "tenant_suspended"


# --- cloud credentials ------------------------------------------------------------------------------
class CredentialInactive(ServiceError):
    """The credential was deactivated: it can be listed but not used or rotated (create a new one)."""

    status = 409
    code = "credential_inactive"


class CredentialCorrupted(ServiceError):
    """The stored ciphertext does not authenticate for its row: tampered, copied, or the key changed.

    500, not 409: the client did nothing wrong and retrying cannot help; it is our data or our key, and
    possibly tampering, so it must reach the server-error alerts. The tenant recovers by replacing the
    credential (which needs no old plaintext).
    """

    status = 500
    code = "credential_corrupted"


class TenantNotActive(ServiceError):
    """The tenant exists but is suspended, cancelled or deleted."""

    status = 403
    code = "tenant_not_active"
