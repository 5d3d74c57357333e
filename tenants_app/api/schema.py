"""OpenAPI generation tweaks: security schemes, stable component names, tags by area and the documented
error responses."""

from __future__ import annotations

import re
from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers


class ErrorDetailSerializer(serializers.Serializer):
    """The `error` object of every failure (tenants_app/api/errors.py)."""

    code = serializers.CharField(help_text="Stable machine name, e.g. validation_failed, not_found.")
    message = serializers.CharField(help_text="A sentence for people; never quotes a secret.")
    fields = serializers.DictField(
        child=serializers.JSONField(),
        required=False,
        help_text="400 only: each invalid field (nested for nested input) and the reasons.",
    )
    retry_after = serializers.IntegerField(required=False, help_text="429: seconds until a retry can pass.")
    limit = serializers.JSONField(required=False, help_text="429: the limit reached (its name or its value).")
    window = serializers.CharField(required=False, help_text="429 (rate limit): the window, e.g. minute.")
    figures = serializers.DictField(
        child=serializers.IntegerField(allow_null=True),
        required=False,
        help_text="429 (quota): the counts behind the refusal.",
    )


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


# Failures any operation can answer with, besides what its view declares; 404, 409, 413 and 415 are added
# only where they can happen (a path parameter names something; a write meets the current state; a
# request body is read).
ERROR_RESPONSES: dict[str, str] = {
    "400": "Invalid input: `fields` names each field and the reason.",
    "401": "No valid credentials: a missing, unknown, revoked or expired key or token.",
    "403": "Not allowed: a missing scope, read-only staff, a suspended tenant or a plan limit.",
    "404": "The tenant or the resource named in the path does not exist (or is not yours).",
    "409": "Conflicts with the current state: it exists already, a concurrent change, a wrong run state.",
    "413": "The request body is over the API's size limit; nothing was read.",
    "415": "The body's media type is not accepted, or the body cannot be read as that type.",
    "429": "A rate limit or quota is reached: retry after `retry_after` seconds.",
    "503": "BigQuery or KMS is unavailable; the request may be partly done: send the same one again later.",
}


def error_response(description: str) -> OpenApiResponse:
    """A view's own error status, with the error envelope as its body (for `extend_schema` responses)."""
    return OpenApiResponse(ErrorSerializer, description=description)


# The area of an operation, from the first segment of its path after /api/v1/ (or after a tenant's
# `tenants/{tenant_id}/` or `me/`, where the per-tenant resources are served twice).
AREA_TAGS: dict[str, str] = {
    "tenants": "tenants",
    "me": "tenants",
    # A tenant's own lifecycle, under tenants/{tenant_id}/.
    "suspend": "tenants",
    "reactivate": "tenants",
    "offboard": "tenants",
    "keys": "keys",
    "credentials": "credentials",
    "subscription": "subscriptions",
    "usage": "subscriptions",
    "pipelines": "pipelines",
    "pipeline-templates": "pipelines",
    "runs": "runs",
    "queue": "runs",
    "webhooks": "webhooks",
    "audit": "audit",
    "worker": "worker",
}
# The probes' tag: they live outside /api/v1/ (see HEALTH_PATHS below).
HEALTH_TAG = "health"
API_TAGS = (*dict.fromkeys(AREA_TAGS.values()), HEALTH_TAG)
_TENANT_PREFIXES = (("tenants", "{tenant_id}"), ("me",))


def area_tag(path: str) -> str:
    """The tag of the operations on `path` (an unknown area is its own tag, which a test refuses)."""
    segments = path.removeprefix("/api/v1/").split("/")
    for prefix in _TENANT_PREFIXES:
        if tuple(segments[: len(prefix)]) == prefix and len(segments) > len(prefix):
            segments = segments[len(prefix) :]
            break
    return AREA_TAGS.get(segments[0], segments[0])


RETRY_AFTER_HEADER = {
    "Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before a retry."}
}


class ApiSchema(SpectacularAutoSchema):
    """Names components and operations after the view, as HackSoft-style nested serializers need."""

    def get_serializer_name(self, serializer: Any, direction: str) -> str:
        # Every view nests its own `InputSerializer`/`OutputSerializer`: the outer class keeps them apart.
        return type(serializer).__qualname__.replace("Api.", "").replace(".", "")

    def get_operation_id(self) -> str:
        view_name = re.sub(r"Api$", "", type(self.view).__name__)
        words = re.sub(r"(?<!^)(?=[A-Z])", "_", view_name).lower()
        # The same view serves staff under /tenants/{id}/ and tenants under /me/.
        prefix = "me_" if "/api/v1/me" in self.path else ""
        return f"{prefix}{words}_{self.method.lower()}"

    def get_tags(self) -> list[str]:
        return [area_tag(self.path)]

    def get_auth(self) -> list[dict[str, Any]]:
        """Each path's real callers: every authenticator runs everywhere, but /me is for tenant keys only."""
        auth = super().get_auth()
        if "/api/v1/worker/" in self.path:
            return auth
        callers = {"TenantApiKey"} if "/api/v1/me" in self.path else {"AdminToken", "cookieAuth"}
        # A view read by every kind of caller (the template catalogue) names them itself.
        callers = getattr(self.view, "schema_callers", callers)
        return [requirement for requirement in auth if set(requirement) <= callers]

    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        # Views declare their successes; the error envelope is the same everywhere, so it is declared once.
        error_ref = self.resolve_serializer(ErrorSerializer, "response").ref
        responses = operation.setdefault("responses", {})
        for code in self._error_codes(operation):
            existing = responses.setdefault(code, {"description": ERROR_RESPONSES[code]})
            existing.setdefault("content", {"application/json": {"schema": error_ref}})
            if code in ("429", "503"):
                existing.setdefault("headers", RETRY_AFTER_HEADER)
        return operation

    def _error_codes(self, operation: dict[str, Any]) -> list[str]:
        codes = ["400", "401", "403", "429", "503"]
        if "{" in self.path:
            codes.append("404")
        if self.method not in ("GET", "HEAD", "OPTIONS"):
            codes.append("409")
        if "requestBody" in operation:
            codes += ["413", "415"]
        return sorted(codes)


class TenantApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "tenants_app.api.authentication.TenantApiKeyAuthentication"
    name = "TenantApiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "A tenant's API key."}


class AdminTokenScheme(OpenApiAuthenticationExtension):
    target_class = "tenants_app.api.authentication.AdminTokenAuthentication"
    name = "AdminToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "description": "A staff member's admin API token."}


# --- The probes (tenants_app/api/health.py) -------------------------------------------------------
# They are plain Django views on purpose (no authentication, throttling or content negotiation stands
# between a load balancer and the answer), so drf-spectacular cannot see them; this hook documents
# them under the `health` tag, public (`security: []`), with the bodies they answer.
_CHECK = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["ok", "unavailable"]},
        "ms": {"type": "integer", "description": "How long the check took."},
        "error": {"type": "string", "description": "The failure's class name, when it failed."},
    },
    "required": ["status"],
}
_READINESS = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["ok", "unavailable"]},
        "checks": {
            "type": "object",
            "properties": {"bigquery": _CHECK, "kms": _CHECK},
            "required": ["bigquery", "kms"],
        },
    },
    "required": ["status", "checks"],
}
HEALTH_PATHS: dict[str, dict[str, Any]] = {
    "/healthz": {
        "get": {
            "operationId": "healthz_get",
            "summary": "Check that the process serves requests",
            "description": "Liveness: touches nothing else, so an outage of BigQuery does not restart it.",
            "tags": [HEALTH_TAG],
            "security": [],
            "responses": {
                "200": {
                    "description": "Serving.",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {"status": {"type": "string", "enum": ["ok"]}},
                                "required": ["status"],
                            }
                        }
                    },
                }
            },
        }
    },
    "/readyz": {
        "get": {
            "operationId": "readyz_get",
            "summary": "Check that BigQuery and KMS answer",
            "description": "Readiness: BigQuery answers a query and KMS round-trips a value.",
            "tags": [HEALTH_TAG],
            "security": [],
            "responses": {
                "200": {"description": "Ready.", "content": {"application/json": {"schema": _READINESS}}},
                "503": {
                    "description": "Not ready: the failing check is named.",
                    "content": {"application/json": {"schema": _READINESS}},
                },
            },
        }
    },
}


def add_health_paths(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: the probes' operations, after the API's own."""
    result.setdefault("paths", {}).update(HEALTH_PATHS)
    return result
