"""Portal pages about one tenant: detail, onboarding wizard and operations."""

from __future__ import annotations

from django.contrib.admin import AdminSite
from django.urls import URLPattern, path

from tenants_app.portal import credential_views, key_views, subscription_views, webhook_views
from tenants_app.portal import tenant_views as views


def get_urls(site: AdminSite) -> list[URLPattern]:
    """Views wrapped in `site.admin_view` (login and staff checks), named `portal-...`."""
    wrap = site.admin_view
    tenant = "tenants/<str:tenant_id>/"
    hook = f"{tenant}webhooks/<str:endpoint_id>/"
    return [
        # Before the tenant pages: `onboard` is a reserved tenant id, never a tenant.
        path("tenants/onboard/", wrap(views.tenant_onboard_view), name="portal-tenant-onboard"),
        path(tenant, wrap(views.tenant_detail_view), name="portal-tenant-detail"),
        path(f"{tenant}edit/", wrap(views.tenant_edit_view), name="portal-tenant-edit"),
        path(f"{tenant}suspend/", wrap(views.tenant_suspend_view), name="portal-tenant-suspend"),
        path(f"{tenant}reactivate/", wrap(views.tenant_reactivate_view), name="portal-tenant-reactivate"),
        path(f"{tenant}offboard/", wrap(views.tenant_offboard_view), name="portal-tenant-offboard"),
        path(f"{tenant}plan/", wrap(subscription_views.tenant_plan_view), name="portal-tenant-plan"),
        path(f"{tenant}limits/", wrap(subscription_views.tenant_limits_view), name="portal-tenant-limits"),
        path(
            f"{tenant}subscription/status/",
            wrap(subscription_views.tenant_subscription_status_view),
            name="portal-tenant-subscription-status",
        ),
        path(f"{tenant}keys/new/", wrap(key_views.tenant_key_create_view), name="portal-tenant-key-create"),
        path(
            f"{tenant}keys/<str:api_key_id>/rotate/",
            wrap(key_views.tenant_key_rotate_view),
            name="portal-tenant-key-rotate",
        ),
        path(
            f"{tenant}keys/<str:api_key_id>/revoke/",
            wrap(key_views.tenant_key_revoke_view),
            name="portal-tenant-key-revoke",
        ),
        path(
            f"{tenant}credentials/new/",
            wrap(credential_views.tenant_credential_create_view),
            name="portal-tenant-credential-create",
        ),
        path(
            f"{tenant}credentials/<str:credential_id>/replace/",
            wrap(credential_views.tenant_credential_replace_view),
            name="portal-tenant-credential-replace",
        ),
        path(
            f"{tenant}credentials/<str:credential_id>/deactivate/",
            wrap(credential_views.tenant_credential_deactivate_view),
            name="portal-tenant-credential-deactivate",
        ),
        path(f"{tenant}webhooks/", wrap(webhook_views.webhook_list_view), name="portal-tenant-webhooks"),
        # Before the endpoint pages: "new" is not an endpoint id.
        path(f"{tenant}webhooks/new/", wrap(webhook_views.webhook_create_view), name="portal-webhook-create"),
        path(f"{hook}", wrap(webhook_views.webhook_detail_view), name="portal-webhook-detail"),
        path(f"{hook}test/", wrap(webhook_views.webhook_test_view), name="portal-webhook-test"),
        path(f"{hook}delete/", wrap(webhook_views.webhook_delete_view), name="portal-webhook-delete"),
    ]
