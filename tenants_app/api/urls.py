"""URLs of the REST API, mounted under /api/v1/.

Per-tenant resources are served twice: under `tenants/<tenant_id>/` to staff, and under `me/` to a
tenant's own API key. The views are the same; only where the tenant id comes from differs.
"""

from __future__ import annotations

from django.urls import path

from tenants_app.api import audit as audit_views
from tenants_app.api import credentials, keys, me, onboarding, tenants
from tenants_app.api import pipeline_templates as template_views
from tenants_app.api import pipelines as pipeline_views
from tenants_app.api import runs as run_views
from tenants_app.api import subscriptions as subscription_views
from tenants_app.api import webhooks as webhook_views
from tenants_app.api import worker as worker_views
from tenants_app.api import worker_credentials as worker_credential_views


def tenant_resources(prefix: str, name: str) -> list:
    return [
        path(f"{prefix}keys", keys.ApiKeyListApi.as_view(), name=f"{name}-keys"),
        path(
            f"{prefix}keys/<str:api_key_id>/rotate", keys.ApiKeyRotateApi.as_view(), name=f"{name}-key-rotate"
        ),
        path(
            f"{prefix}keys/<str:api_key_id>/revoke", keys.ApiKeyRevokeApi.as_view(), name=f"{name}-key-revoke"
        ),
        path(f"{prefix}credentials", credentials.CredentialListApi.as_view(), name=f"{name}-credentials"),
        path(
            f"{prefix}credentials/<str:credential_id>",
            credentials.CredentialDetailApi.as_view(),
            name=f"{name}-credential",
        ),
        path(
            f"{prefix}credentials/<str:credential_id>/replace",
            credentials.CredentialReplaceApi.as_view(),
            name=f"{name}-credential-replace",
        ),
        path(
            f"{prefix}credentials/<str:credential_id>/deactivate",
            credentials.CredentialDeactivateApi.as_view(),
            name=f"{name}-credential-deactivate",
        ),
        path(
            f"{prefix}subscription", subscription_views.SubscriptionApi.as_view(), name=f"{name}-subscription"
        ),
        path(
            f"{prefix}subscription/preview",
            subscription_views.SubscriptionPlanPreviewApi.as_view(),
            name=f"{name}-subscription-preview",
        ),
        path(f"{prefix}usage", me.UsageApi.as_view(), name=f"{name}-usage"),
        path(f"{prefix}audit", audit_views.AuditListApi.as_view(), name=f"{name}-audit"),
        path(f"{prefix}pipelines", pipeline_views.PipelineConfigListApi.as_view(), name=f"{name}-pipelines"),
        path(
            f"{prefix}pipelines/<str:config_id>",
            pipeline_views.PipelineConfigDetailApi.as_view(),
            name=f"{name}-pipeline",
        ),
        path(
            f"{prefix}pipelines/<str:config_id>/pause",
            pipeline_views.PipelineConfigPauseApi.as_view(),
            name=f"{name}-pipeline-pause",
        ),
        path(
            f"{prefix}pipelines/<str:config_id>/resume",
            pipeline_views.PipelineConfigResumeApi.as_view(),
            name=f"{name}-pipeline-resume",
        ),
        path(
            f"{prefix}pipelines/<str:config_id>/run",
            pipeline_views.PipelineConfigRunNowApi.as_view(),
            name=f"{name}-pipeline-run",
        ),
        path(f"{prefix}webhooks", webhook_views.WebhookEndpointListApi.as_view(), name=f"{name}-webhooks"),
        path(
            f"{prefix}webhooks/<str:endpoint_id>",
            webhook_views.WebhookEndpointDetailApi.as_view(),
            name=f"{name}-webhook",
        ),
        path(
            f"{prefix}webhooks/<str:endpoint_id>/test",
            webhook_views.WebhookEndpointTestApi.as_view(),
            name=f"{name}-webhook-test",
        ),
        path(
            f"{prefix}webhooks/<str:endpoint_id>/deliveries",
            webhook_views.WebhookDeliveryListApi.as_view(),
            name=f"{name}-webhook-deliveries",
        ),
        path(f"{prefix}runs", run_views.RunListApi.as_view(), name=f"{name}-runs"),
        path(f"{prefix}runs/<str:run_id>", run_views.RunDetailApi.as_view(), name=f"{name}-run"),
        path(
            f"{prefix}runs/<str:run_id>/cancel", run_views.RunCancelApi.as_view(), name=f"{name}-run-cancel"
        ),
        path(
            f"{prefix}runs/<str:run_id>/requeue",
            run_views.RunRequeueApi.as_view(),
            name=f"{name}-run-requeue",
        ),
    ]


urlpatterns = [
    path("tenants", tenants.TenantListApi.as_view(), name="tenant-list"),
    # Before tenants/<tenant_id>: "onboard" and "dryrun" are reserved, never tenant ids.
    path("tenants/onboard", onboarding.TenantOnboardApi.as_view(), name="tenant-onboard"),
    path("tenants/dryrun", onboarding.TenantOnboardDryRunApi.as_view(), name="tenant-onboard-dryrun"),
    path("tenants/<str:tenant_id>", tenants.TenantDetailApi.as_view(), name="tenant-detail"),
    path("tenants/<str:tenant_id>/suspend", tenants.TenantSuspendApi.as_view(), name="tenant-suspend"),
    path(
        "tenants/<str:tenant_id>/reactivate", tenants.TenantReactivateApi.as_view(), name="tenant-reactivate"
    ),
    path("tenants/<str:tenant_id>/offboard", tenants.TenantOffboardApi.as_view(), name="tenant-offboard"),
    *tenant_resources("tenants/<str:tenant_id>/", "tenant"),
    path("me", me.MeApi.as_view(), name="me"),
    *tenant_resources("me/", "me"),
    path("queue", run_views.QueueListApi.as_view(), name="queue"),
    path("pipeline-templates", template_views.PipelineTemplateListApi.as_view(), name="pipeline-templates"),
    path("worker/claim", worker_views.WorkerClaimApi.as_view(), name="worker-claim"),
    path(
        "worker/runs/<str:run_id>/heartbeat",
        worker_views.WorkerHeartbeatApi.as_view(),
        name="worker-heartbeat",
    ),
    path(
        "worker/runs/<str:run_id>/complete", worker_views.WorkerCompleteApi.as_view(), name="worker-complete"
    ),
    path("worker/runs/<str:run_id>/fail", worker_views.WorkerFailApi.as_view(), name="worker-fail"),
    path(
        "worker/runs/<str:run_id>/credentials",
        worker_credential_views.WorkerRunCredentialsApi.as_view(),
        name="worker-run-credentials",
    ),
]
