"""Who may do what in the admin API: the same roles as the portal."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from rest_framework.permissions import SAFE_METHODS, BasePermission

if TYPE_CHECKING:
    # DRF imports the default permission classes while rest_framework.views is still loading.
    from rest_framework.request import Request
    from rest_framework.views import APIView


def is_read_only_staff(user: object) -> bool:
    """Staff in the read-only group see everything and change nothing; superusers are never read-only."""
    if getattr(user, "is_superuser", False):
        return False
    groups = getattr(user, "groups", None)
    return groups is not None and groups.filter(name=settings.READ_ONLY_STAFF_GROUP).exists()


class IsStaff(BasePermission):
    """Active staff may read; staff outside the read-only group may also change."""

    message = "Staff access required; read-only staff cannot change anything."

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        if not (user and user.is_authenticated and user.is_active and user.is_staff):
            return False
        return request.method in SAFE_METHODS or not is_read_only_staff(user)


class StaffOrTenantScope(BasePermission):
    """`/tenants/{tenant_id}/...` is for staff; `/me/...` for a tenant key holding the view's scope."""

    message = "Not allowed: staff access, or a tenant API key with the required scope, is needed."

    def has_permission(self, request: Request, view: APIView) -> bool:
        if "tenant_id" in view.kwargs:
            return IsStaff().has_permission(request, view)
        principal = request.user
        if not hasattr(principal, "has_scope"):
            return False
        scope = view.read_scope if request.method in SAFE_METHODS else view.write_scope  # type: ignore[attr-defined]
        if not principal.has_scope(scope):
            self.message = f"This API key lacks the {scope!r} scope."
            return False
        return True


class TenantKeyOrStaff(BasePermission):
    """Reading what every caller shares (the template catalogue): any tenant key, or staff."""

    message = "Not allowed: a tenant API key or staff access is needed."

    def has_permission(self, request: Request, view: APIView) -> bool:
        if request.method not in SAFE_METHODS:
            return False
        return hasattr(request.user, "has_scope") or IsStaff().has_permission(request, view)
