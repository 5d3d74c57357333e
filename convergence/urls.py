"""Top-level URL configuration."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from tenants_app.api.health import healthz, readyz
from tenants_app.api.metrics import metrics

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("tenants_app.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves Swagger UI's start-up script as a file (`?script`), so the docs page runs
    # under the portal's Content-Security-Policy (no inline script) like every other page.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    # Prometheus scrapes: METRICS_TOKEN as a bearer token; 404 while none is configured.
    path("metrics", metrics, name="metrics"),
]

# Under /api/ every error is the API's JSON envelope, even where no API view answers (an unknown
# path, a crash): these dispatch on the path, and the portal keeps Django's HTML pages.
handler400 = "tenants_app.api.errors.bad_request"
handler403 = "tenants_app.api.errors.permission_denied"
handler404 = "tenants_app.api.errors.page_not_found"
handler500 = "tenants_app.api.errors.server_error"
