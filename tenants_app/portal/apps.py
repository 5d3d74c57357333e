"""Django's admin, with our admin site as the default one."""

from __future__ import annotations

from django.contrib.admin.apps import AdminConfig


class PortalAdminConfig(AdminConfig):
    default_site = "tenants_app.portal.site.PortalAdminSite"
