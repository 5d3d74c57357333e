"""The portal's admin site: Django's admin plus the tenant pages that are not one table's list."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, URLResolver, reverse, reverse_lazy
from django.utils.http import url_has_allowed_host_and_scheme

from tenants_app import presentation
from tenants_app.api.permissions import is_read_only_staff
from tenants_app.portal.login_throttle import ThrottledAdminAuthenticationForm, throttled_response


class PortalAdminSite(admin.AdminSite):
    site_header = "Convergence tenant administration"
    site_title = "Convergence admin"
    index_title = "Tenant administration"
    # "View site" in every page's header: the portal's own index (Django's default, "/", is no page of ours).
    site_url = reverse_lazy("admin:index")
    # An empty value as every portal page shows it (tenants_app/presentation.py), not Django's "-".
    empty_value_display = presentation.EMPTY
    # Failed logins per username and address are limited (tenants_app/portal/login_throttle.py).
    login_form = ThrottledAdminAuthenticationForm

    def login(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        """Django's admin login; a refusal for too many failures is a 429 with Retry-After."""
        _replace_unsafe_next(request, reverse("admin:index", current_app=self.name))
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


def _replace_unsafe_next(request: HttpRequest, fallback: str) -> None:
    """An unsafe `next` (another host or scheme, or empty) becomes `fallback`, in GET and POST.

    Django's login would drop it and send the user to LOGIN_REDIRECT_URL (`/accounts/profile/`), a
    page this portal does not have; a safe `next` is kept, and Django checks it again itself.
    """
    for method in ("GET", "POST"):
        data = getattr(request, method)
        target = data.get(REDIRECT_FIELD_NAME)
        if target is None or url_has_allowed_host_and_scheme(
            target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            continue
        data = data.copy()
        data[REDIRECT_FIELD_NAME] = fallback
        setattr(request, method, data)
