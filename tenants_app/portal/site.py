"""The portal's admin site: Django's admin plus the tenant pages that are not one table's list."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, URLResolver

from tenants_app.api.permissions import is_read_only_staff
from tenants_app.portal.login_throttle import ThrottledAdminAuthenticationForm, throttled_response


class PortalAdminSite(admin.AdminSite):
    site_header = "Convergence tenant administration"
    site_title = "Convergence admin"
    index_title = "Tenant administration"
    # Failed logins per username and address are limited (tenants_app/portal/login_throttle.py).
    login_form = ThrottledAdminAuthenticationForm

    def login(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        """Django's admin login; a refusal for too many failures is a 429 with Retry-After."""
        return throttled_response(super().login(request, extra_context))

    def each_context(self, request: HttpRequest) -> dict[str, Any]:
        """Django's context for every admin page, plus whether this user may change anything."""
        context = super().each_context(request)
        context["portal_can_change"] = request.user.is_active and not is_read_only_staff(request.user)
        return context

    def get_urls(self) -> list[URLPattern | URLResolver]:
        # Our pages go first: Django's catch-all app_list pattern would otherwise swallow them.
        # Each is named `portal-...` and reversed as `admin:portal-...`.
        from tenants_app.portal import urls_dashboard, urls_pipelines, urls_tenants

        return [
            *urls_tenants.get_urls(self),
            *urls_dashboard.get_urls(self),
            *urls_pipelines.get_urls(self),
            *super().get_urls(),
        ]
