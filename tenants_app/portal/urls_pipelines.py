"""Portal pages for pipeline schedules, the execution queue and runs (operations beyond the table lists)."""

from __future__ import annotations

from django.contrib.admin import AdminSite
from django.urls import URLPattern, path

from tenants_app.portal import pipeline_views as views


def get_urls(site: AdminSite) -> list[URLPattern]:
    """Views wrapped in `site.admin_view` (login and staff checks), named `portal-...`."""
    wrap = site.admin_view
    config = "tenants/<str:tenant_id>/pipelines/<str:config_id>/"
    return [
        path(config, wrap(views.pipeline_detail_view), name="portal-pipeline-detail"),
        path(f"{config}edit/", wrap(views.pipeline_edit_view), name="portal-pipeline-edit"),
        path(f"{config}pause/", wrap(views.pipeline_pause_view), name="portal-pipeline-pause"),
        path(f"{config}resume/", wrap(views.pipeline_resume_view), name="portal-pipeline-resume"),
        path(f"{config}run/", wrap(views.pipeline_run_now_view), name="portal-pipeline-run"),
    ]
