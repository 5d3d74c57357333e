"""Base view for resources served both to staff (by tenant id) and to a tenant (its own, via /me)."""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.views import APIView

from tenants_app.api.permissions import StaffOrTenantScope


class TenantScopedApi(APIView):
    """The tenant comes from the URL for staff and from the API key for tenants: never from the body."""

    permission_classes = [StaffOrTenantScope]
    read_scope = "tenant:read"
    write_scope = "tenant:read"

    def tenant_id(self) -> str:
        """The tenant this request is about."""
        kwargs: dict[str, Any] = self.kwargs
        if "tenant_id" in kwargs:
            return str(kwargs["tenant_id"])
        return str(self.request.user.tenant_id)

    @staticmethod
    def actor(request: Request) -> str:
        """Who acts, for created_by/revoked_by columns: `user:<name>` or `apikey:<id>`."""
        user = request.user
        if getattr(user, "api_key_id", None):
            return str(user)
        return f"user:{user.get_username()}"
