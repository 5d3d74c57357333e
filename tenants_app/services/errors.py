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
