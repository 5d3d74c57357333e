"""URLs of the REST API, mounted under /api/v1/."""

from __future__ import annotations

from django.urls import path

from tenants_app.api import tenants

urlpatterns = [
    path("tenants", tenants.TenantListApi.as_view(), name="tenant-list"),
    path("tenants/<str:tenant_id>", tenants.TenantDetailApi.as_view(), name="tenant-detail"),
    path("tenants/<str:tenant_id>/suspend", tenants.TenantSuspendApi.as_view(), name="tenant-suspend"),
    path(
        "tenants/<str:tenant_id>/reactivate", tenants.TenantReactivateApi.as_view(), name="tenant-reactivate"
    ),
    path("tenants/<str:tenant_id>/offboard", tenants.TenantOffboardApi.as_view(), name="tenant-offboard"),
]
