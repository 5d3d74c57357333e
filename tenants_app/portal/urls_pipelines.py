"""Portal pages for pipeline schedules, the execution queue and runs (operations beyond the table lists)."""

from __future__ import annotations

from django.contrib.admin import AdminSite
from django.urls import URLPattern


def get_urls(site: AdminSite) -> list[URLPattern]:
    """Views wrapped in `site.admin_view` (login and staff checks), named `portal-...`."""
    return []
