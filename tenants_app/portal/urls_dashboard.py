"""Portal pages across tenants: the quota dashboard."""

from __future__ import annotations

from django.contrib.admin import AdminSite
from django.urls import URLPattern


def get_urls(site: AdminSite) -> list[URLPattern]:
    """Views wrapped in `site.admin_view` (login and staff checks), named `portal-...`."""
    return []
