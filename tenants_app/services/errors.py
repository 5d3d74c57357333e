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
    """BigQuery or KMS cannot be reached: the request may be partly done; sent again, it finishes."""

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


# --- pipeline runs and workers ----------------------------------------------------------------------
class LeaseLost(ServiceError):
    """The worker no longer holds the run (lease expired and taken over, cancelled, or another attempt)."""

    status = 409
    code = "lease_lost"


class RunStateConflict(ServiceError):
    """The run is not in a state that allows this action (e.g. cancelling a finished run)."""

    status = 409
    code = "run_state_conflict"


# --- plans, quotas and rate limits ------------------------------------------------------------------
class SubscriptionInactive(ServiceError):
    """The subscription's state forbids this operation (e.g. a pipeline run while SUSPENDED or EXPIRED)."""

    status = 403
    code = "subscription_inactive"


class SubscriptionCancelled(ServiceError):
    """The subscription is CANCELLED (its tenant offboarded, or cancelled by staff): final, so no plan,
    limit or status change applies any more; a returning customer is onboarded again."""

    status = 409
    code = "subscription_cancelled"


class QuotaExceeded(ServiceError):
    """A pipeline-run limit is reached: `limit` names it, `figures` has the counts, `retry_after` seconds."""

    status = 429
    code = "quota_exceeded"

    def __init__(self, message: str, *, limit: str, figures: dict[str, int | None], retry_after: int) -> None:
        super().__init__(message)
        self.limit = limit
        self.figures = figures
        self.retry_after = retry_after


class RateLimited(ServiceError):
    """Too many API calls for the key's tenant in a window; `retry_after` seconds until it reopens."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, window: str, limit: int, retry_after: int) -> None:
        super().__init__(message)
        self.window = window
        self.limit = limit
        self.retry_after = retry_after
