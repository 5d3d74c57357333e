"""Portal pages across tenants: the quota dashboard."""

from __future__ import annotations

from django.contrib.admin import AdminSite
from django.urls import URLPattern, path

from tenants_app.portal import dashboard_views as views


def get_urls(site: AdminSite) -> list[URLPattern]:
    """Views wrapped in `site.admin_view` (login and staff checks), named `portal-...`."""
    wrap = site.admin_view
    return [
        path("dashboard/", wrap(views.dashboard_view), name="portal-dashboard"),
        path("dashboard/<str:tenant_id>/", wrap(views.tenant_usage_view), name="portal-tenant-usage"),
    ]
