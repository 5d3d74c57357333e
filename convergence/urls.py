"""Top-level URL configuration."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponseRedirect
from django.templatetags.static import static
from django.urls import include, path, reverse
from django.views.decorators.http import require_safe
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from tenants_app.api.health import healthz, readyz
from tenants_app.api.metrics import metrics


@require_safe
def home(request: HttpRequest) -> HttpResponseRedirect:
    """The portal is the site: its index is the admin's, as "View site" (PortalAdminSite.site_url)."""
    return HttpResponseRedirect(reverse("admin:index"))


@require_safe
def favicon(request: HttpRequest) -> HttpResponseRedirect:
    """Browsers ask for /favicon.ico whatever the page links; the icon is one SVG among the static files.

    Not permanent: the static file's URL may change (hashed names), and a cached 301 would outlive it.
    """
    return HttpResponseRedirect(static("portal/favicon.svg"))


urlpatterns = [
    path("", home, name="home"),
    path("favicon.ico", favicon, name="favicon"),
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
