"""Base view for resources served both to staff (by tenant id) and to a tenant (its own, via /me)."""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tenants_app.api.permissions import StaffOrTenantScope
from tenants_app.services.actors import actors_masked, staff_actor
from tenants_app.services.tenants import tenant_get


class TenantScopedApi(APIView):
    """The tenant comes from the URL for staff and from the API key for tenants: never from the body."""

    permission_classes = [StaffOrTenantScope]
    read_scope = "tenant:read"
    write_scope = "tenant:read"

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if "tenant_id" in kwargs:
            # Staff naming a tenant that does not exist get a 404, not an empty list (one job).
            tenant_get(tenant_id=str(kwargs["tenant_id"]))

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)
        if getattr(request.user, "api_key_id", None) and isinstance(response.data, dict | list):
            # Tenants see that staff acted, not which staff member (their names are ours to keep).
            response.data = actors_masked(response.data)
        return response

    def tenant_id(self) -> str:
        """The tenant this request is about."""
        kwargs: dict[str, Any] = self.kwargs
        if "tenant_id" in kwargs:
            return str(kwargs["tenant_id"])
        return str(self.request.user.tenant_id)

    @staticmethod
    def actor(request: Request) -> str:
        """Who acts, for created_by/revoked_by columns: `user:<name>` or `apikey:<id>` (see actors.py)."""
        user = request.user
        if getattr(user, "api_key_id", None):
            return str(user)
        return staff_actor(user.get_username())
