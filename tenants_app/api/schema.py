"""OpenAPI generation tweaks: security schemes for our authenticators and stable component names."""

from __future__ import annotations

import re
from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema


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
