"""Portal pages for pipeline schedules, the execution queue and runs (operations beyond the table lists)."""

from __future__ import annotations

from django.contrib.admin import AdminSite
from django.urls import URLPattern, path

from tenants_app.portal import pipeline_run_views as run_views
from tenants_app.portal import pipeline_views as views


def get_urls(site: AdminSite) -> list[URLPattern]:
    """Views wrapped in `site.admin_view` (login and staff checks), named `portal-...`."""
    wrap = site.admin_view
    config = "tenants/<str:tenant_id>/pipelines/<str:config_id>/"
    run = "tenants/<str:tenant_id>/runs/<str:run_id>/"
    return [
        # Before the config pages: "new" is not a config id.
        path(
            "tenants/<str:tenant_id>/pipelines/new/",
            wrap(run_views.pipeline_create_view),
            name="portal-pipeline-create",
        ),
        path(config, wrap(views.pipeline_detail_view), name="portal-pipeline-detail"),
        path(f"{config}edit/", wrap(views.pipeline_edit_view), name="portal-pipeline-edit"),
        path(f"{config}pause/", wrap(views.pipeline_pause_view), name="portal-pipeline-pause"),
        path(f"{config}resume/", wrap(views.pipeline_resume_view), name="portal-pipeline-resume"),
        path(f"{config}run/", wrap(run_views.pipeline_run_now_view), name="portal-pipeline-run"),
        path(f"{config}backfill/", wrap(run_views.pipeline_backfill_view), name="portal-pipeline-backfill"),
        path(f"{config}delete/", wrap(run_views.pipeline_delete_view), name="portal-pipeline-delete"),
        path(f"{run}", wrap(run_views.run_detail_view), name="portal-run-detail"),
        path(f"{run}cancel/", wrap(run_views.run_cancel_view), name="portal-run-cancel"),
        path(f"{run}requeue/", wrap(run_views.run_requeue_view), name="portal-run-requeue"),
    ]
