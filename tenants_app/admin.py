"""The portal's table pages: one short declaration per BigQuery table (see bigquery_backend/admin.py)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import quote
from django.http import HttpRequest, HttpResponse, QueryDict
from django.template.loader import render_to_string
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html

from bigquery_backend.admin import BigQueryModelAdmin, ObjectTool
from bigquery_backend.repository import Repository
from tenants_app import presentation
from tenants_app.api.permissions import is_read_only_staff
from tenants_app.labels import EMPTY, enum_label
from tenants_app.models import (
    AdminApiToken,
    AuditLogEntry,
    TenantApiKey,
    TenantCloudCredential,
    TenantDqResult,
    TenantPipelineConfig,
    TenantPipelineExecutionQueue,
    TenantPipelineRun,
    TenantProfile,
    TenantScheduledPipelineRun,
    TenantStepLog,
    TenantSubscription,
    TenantUsageQuota,
    TenantWebhookDelivery,
    TenantWebhookEndpoint,
)
from tenants_app.repositories import central_repository, tenant_repository
from tenants_app.services.audit import SOURCES, AuditAction
from tenants_app.services.audit_feed import audit_action_label, audit_diff_text, audit_sentence, audit_target
from tenants_app.services.datasets import check_tenant_id
from tenants_app.services.errors import ServiceUnavailable
from tenants_app.services.tenant_capabilities import tenant_capabilities_for


def _reverse_or_none(name: str, *args: str) -> str | None:
    """A portal page's URL, or None while the page does not exist (pages land one by one)."""
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return None


def _changelist(model: type[Any], **params: str) -> str:
    url = reverse(f"admin:tenants_app_{model._meta.model_name}_changelist")
    query = QueryDict(mutable=True)
    query.update(params)
    return f"{url}?{query.urlencode()}" if params else url


def tenant_url(tenant_id: str) -> str:
    """The tenant's page: the tenant detail page, else its profile row."""
    return _reverse_or_none("admin:portal-tenant-detail", tenant_id) or reverse(
        "admin:tenants_app_tenantprofile_change", args=[quote(tenant_id)]
    )


class PortalTableAdmin(BigQueryModelAdmin):
    """Portal roles: read-only staff see every table, and no buttons that change something."""

    # Shown as every portal page shows them (tenants_app/presentation.py), on row pages too: the
    # tenant datasets' status columns have no choices of their own, yet hold the same enums.
    value_formats = {
        "duration_ms": presentation.duration_ms,
        "status": enum_label,
        "trigger_type": enum_label,
    }

    def has_operation_permission(self, request: HttpRequest) -> bool:
        return super().has_operation_permission(request) and not is_read_only_staff(request.user)

    def get_cell_url(self, request: HttpRequest, obj: Any, field_name: str) -> str | None:
        if field_name == "tenant_id" and obj.tenant_id:
            return tenant_url(obj.tenant_id)
        return None


class CentralTableAdmin(PortalTableAdmin):
    """A table of the central, protected dataset."""

    def get_repository(self, request: HttpRequest) -> Repository[Any]:
        return central_repository(self.model)

    def get_missing_table_message(self, request: HttpRequest) -> str:
        return (
            f"The {self.opts.verbose_name_plural} table does not exist: run `manage.py bootstrap_bigquery`."
        )


class TenantDatasetAdmin(PortalTableAdmin):
    """A table in one tenant's own dataset: the page asks which tenant first."""

    repository_parameter = "tenant_id"
    repository_parameter_label = "Tenant ID"
    repository_parameter_help = "These rows live in each tenant's own dataset: choose the tenant."

    def get_repository(self, request: HttpRequest) -> Repository[Any] | None:
        tenant_id = request.GET.get("tenant_id", "").strip()
        if not tenant_id:
            return None
        return tenant_repository(self.model, check_tenant_id(tenant_id))

    def get_row_url(self, obj: Any) -> str:
        return f"{super().get_row_url(obj)}?{QueryDict.fromkeys(['tenant_id'], obj.tenant_id).urlencode()}"

    def get_cell_url(self, request: HttpRequest, obj: Any, field_name: str) -> str | None:
        if field_name == "pipeline_logging_id" and self.model is not TenantPipelineRun:
            # Quoted like every row link: the run page unquotes its key ("_40" would read "@").
            run = reverse("admin:tenants_app_tenantpipelinerun_change", args=[quote(obj.pipeline_logging_id)])
            return f"{run}?{QueryDict.fromkeys(['tenant_id'], obj.tenant_id).urlencode()}"
        return super().get_cell_url(request, obj, field_name)

    def get_missing_table_message(self, request: HttpRequest) -> str:
        tenant_id = request.GET.get("tenant_id", "")
        return (
            f"Tenant {tenant_id!r} has no dataset: it was never onboarded, or it was offboarded with its "
            "dataset purged."
        )


# --- central dataset ------------------------------------------------------------------------------------
@admin.register(TenantProfile)
class TenantProfileAdmin(CentralTableAdmin):
    # No separate status column: the verdict's headline starts with it ("Suspended: ..."), and the list
    # then fits a 1366 px screen; the status filter stays.
    list_display = (
        "tenant_id",
        "company_name",
        "admin_email",
        "can_do_now",
        "subscription_plan",
        "created_at",
    )
    search_fields = ("tenant_id", "company_name", "admin_email")
    list_filter = ("status", "subscription_plan")
    ordering = ("-created_at",)

    def get_row_url(self, obj: Any) -> str:
        return _reverse_or_none("admin:portal-tenant-detail", obj.tenant_id) or super().get_row_url(obj)

    def get_object_tools(self, request: HttpRequest) -> list[ObjectTool]:
        onboard = _reverse_or_none("admin:portal-tenant-onboard")
        return [("Onboard a tenant", onboard, True)] if onboard else []

    def get_detail_links(self, request: HttpRequest, obj: Any) -> list[tuple[str, str]]:
        tenant_id = obj.tenant_id
        overview = _reverse_or_none("admin:portal-tenant-detail", tenant_id)
        links = [("Tenant overview", overview)] if overview else []
        links += [
            (model._meta.verbose_name_plural.capitalize(), _changelist(model, tenant_id__exact=tenant_id))
            for model in (TenantSubscription, TenantUsageQuota, TenantApiKey, TenantCloudCredential)
        ]
        links.append(("Pipeline runs", _changelist(TenantPipelineRun, tenant_id=tenant_id)))
        links.append(("Audit log", _changelist(AuditLogEntry, tenant_id__exact=tenant_id)))
        return links

    def get_cell_url(self, request: HttpRequest, obj: Any, field_name: str) -> str | None:
        return None  # a profile's tenant id is the row itself

    def annotate_page(self, request: HttpRequest, items: list[Any]) -> None:
        try:
            verdicts = tenant_capabilities_for(profiles=items)
        except ServiceUnavailable:
            return  # the column then says so; the rest of the list still helps
        for profile in items:
            profile.capabilities = verdicts[profile.tenant_id]

    @admin.display(description="Can do now")
    def can_do_now(self, obj: Any) -> str:
        """The tenant page's banner in one cell: its level as a coloured word, then the headline."""
        capabilities = getattr(obj, "capabilities", None)
        if capabilities is None:
            return "unknown (BigQuery did not answer)"
        return render_to_string("portal/_status_badge.html", {"capabilities": capabilities}) + format_html(
            " {}", capabilities.headline
        )


@admin.register(TenantSubscription)
class TenantSubscriptionAdmin(CentralTableAdmin):
    list_display = (
        "subscription_id",
        "tenant_id",
        "plan_name",
        "status",
        "daily_limit",
        "monthly_limit",
        "concurrent_limit",
        "trial_end_date",
        "subscription_end_date",
        "created_at",
    )
    search_fields = ("tenant_id", "subscription_id")
    list_filter = ("plan_name", "status")
    exact_filter_fields = ("tenant_id",)
    ordering = ("-created_at",)


@admin.register(TenantUsageQuota)
class TenantUsageQuotaAdmin(CentralTableAdmin):
    list_display = (
        "usage_id",
        "tenant_id",
        "usage_date",
        "pipelines_run_today",
        "daily_limit",
        "pipelines_run_month",
        "monthly_limit",
        "concurrent_pipelines_running",
        "concurrent_limit",
        "total_api_calls_today",
        "last_updated",
    )
    search_fields = ("tenant_id",)
    list_filter = ("usage_date",)
    exact_filter_fields = ("tenant_id",)
    ordering = ("-usage_date", "tenant_id")


@admin.register(TenantApiKey)
class TenantApiKeyAdmin(CentralTableAdmin):
    list_display = (
        "key_prefix",
        "name",
        "tenant_id",
        "scopes",
        "is_active",
        "expires_at",
        "last_used_at",
        "created_at",
        "revoked_at",
    )
    search_fields = ("key_prefix", "name", "tenant_id", "api_key_id")
    list_filter = ("is_active",)
    exact_filter_fields = ("tenant_id",)
    ordering = ("-created_at",)
    # The hash identifies the key (and a short key could be brute-forced from it); the ciphertext is the key.
    secret_fields = ("api_key_hash", "encrypted_api_key")


@admin.register(TenantCloudCredential)
class TenantCloudCredentialAdmin(CentralTableAdmin):
    list_display = (
        "credential_id",
        "tenant_id",
        "provider",
        "credential_name",
        "credential_type",
        "fingerprint",
        "validation_status",
        "is_active",
        "created_at",
        "updated_at",
    )
    search_fields = ("credential_id", "tenant_id", "credential_name", "fingerprint")
    list_filter = ("provider", "credential_type", "validation_status", "is_active")
    exact_filter_fields = ("tenant_id",)
    ordering = ("-created_at",)
    secret_fields = ("encrypted_credentials",)


@admin.register(TenantPipelineConfig)
class TenantPipelineConfigAdmin(CentralTableAdmin):
    list_display = (
        "config_id",
        "tenant_id",
        "provider",
        "domain",
        "pipeline_template",
        "schedule_cron",
        "timezone",
        "is_active",
        "priority",
        "next_run_time",
        "last_run_status",
    )
    search_fields = ("config_id", "tenant_id", "domain", "pipeline_template")
    list_filter = ("is_active", "provider")
    exact_filter_fields = ("tenant_id",)
    # Priority 1 is the most urgent, everywhere.
    ordering = ("priority", "next_run_time")

    def get_row_url(self, obj: Any) -> str:
        # The schedule's own page: its runs and every operation on it.
        page = _reverse_or_none("admin:portal-pipeline-detail", obj.tenant_id, obj.config_id)
        return page or super().get_row_url(obj)


@admin.register(TenantScheduledPipelineRun)
class TenantScheduledPipelineRunAdmin(CentralTableAdmin):
    list_display = (
        "run_id",
        "tenant_id",
        "config_id",
        "pipeline_id",
        "state",
        "priority",
        "scheduled_time",
        "retry_count",
        "started_at",
        "completed_at",
        "failed_at",
    )
    search_fields = ("run_id", "tenant_id", "pipeline_id")
    list_filter = ("state", "scheduled_time")
    exact_filter_fields = ("tenant_id", "config_id")
    ordering = ("priority", "scheduled_time")

    def get_row_url(self, obj: Any) -> str:
        page = _reverse_or_none("admin:portal-run-detail", obj.tenant_id, obj.run_id)
        return page or super().get_row_url(obj)


@admin.register(TenantPipelineExecutionQueue)
class TenantPipelineExecutionQueueAdmin(CentralTableAdmin):
    list_display = (
        "run_id",
        "tenant_id",
        "pipeline_id",
        "state",
        "priority",
        "scheduled_time",
        "available_at",
        "lease_owner",
        "lease_expires_at",
        "attempt",
    )
    search_fields = ("run_id", "tenant_id", "pipeline_id")
    list_filter = ("state", "scheduled_time")
    exact_filter_fields = ("tenant_id", "config_id", "lease_owner")
    ordering = ("priority", "scheduled_time")


# How an entry's source reads: in the feed's filter, on the entry's line and in its columns alike.
AUDIT_SOURCE_LABELS = {source: "API" if source == "api" else source.capitalize() for source in SOURCES}


def audit_source_label(source: str | None) -> str:
    return AUDIT_SOURCE_LABELS.get(source or "", source or EMPTY)


@admin.register(AuditLogEntry)
class AuditLogEntryAdmin(CentralTableAdmin):
    """The audit log as a feed: when, who, what, on what, and one sentence (services/audit_feed.py)."""

    list_display = ("when", "actor", "action_label", "target", "summary")
    search_fields = ("action", "actor", "tenant_id", "target_id")
    list_filter = ("action", "source", "actor_type", "occurred_at")
    exact_filter_fields = ("tenant_id", "actor", "target_id", "request_id")
    filter_choices = {
        "action": AuditAction.choices,
        "source": list(AUDIT_SOURCE_LABELS.items()),
        "actor_type": [("staff", "Staff"), ("tenant_key", "Tenant key"), ("system", "System")],
    }
    value_formats = {**CentralTableAdmin.value_formats, "source": audit_source_label}
    ordering = ("-occurred_at",)
    list_per_page = 100
    change_list_template = "admin/tenants_app/auditlogentry/change_list.html"
    detail_template = "admin/tenants_app/auditlogentry/detail.html"

    @admin.display(description="Time", ordering="occurred_at")
    def when(self, obj: AuditLogEntry) -> str:
        return presentation.timestamp(obj.occurred_at)

    @admin.display(description="Action", ordering="action")
    def action_label(self, obj: AuditLogEntry) -> str:
        # The stored name too: it is what the API and searches filter on.
        return format_html("{} <code>{}</code>", audit_action_label(obj.action), obj.action)

    @admin.display(description="Target", ordering="tenant_id")
    def target(self, obj: AuditLogEntry) -> str:
        target = audit_target(obj)
        tenant = ""
        if target.tenant_id:
            tenant = format_html(
                '<a href="{}"><bdi>{}</bdi></a>', tenant_url(target.tenant_id), target.tenant_id
            )
        ident = ""
        if target.target_id and target.target_id != target.tenant_id:
            ident = format_html(" <bdi>{}</bdi>", target.target_id)
        return format_html(
            '<span class="audit-target">{} <span class="audit-type">{}</span>{}</span>',
            tenant,
            target.type_label,
            ident,
        )

    @admin.display(description="What happened")
    def summary(self, obj: AuditLogEntry) -> str:
        # Each value isolated: an id or a name written right to left cannot reorder the sentence.
        sentence = audit_sentence(obj)
        values = {name: format_html("<bdi>{}</bdi>", value) for name, value in sentence.values.items()}
        return format_html(sentence.template, **values)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        cl = getattr(response, "context_data", None) and response.context_data.get("cl")
        if cl:
            # Above the feed as one choice list, not a sidebar of 32 links; still a BigQuery filter.
            specs = cl["filter_specs"]
            cl["action_filter"] = next(spec for spec in specs if spec.name == "action")
            cl["action_choices"] = AuditAction.choices
            cl["filter_specs"] = [spec for spec in specs if spec.name != "action"]
        return response

    def detail_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        response = super().detail_view(request, object_id)
        entry = getattr(response, "context_data", None) and response.context_data.get("object")
        if entry is not None:
            response.context_data.update(
                summary=self.summary(entry),
                action_label=audit_action_label(entry.action),
                target=self.target(entry),
                source_label=audit_source_label(entry.source),
                diff=audit_diff_text(entry),
            )
        return response


@admin.register(TenantWebhookEndpoint)
class TenantWebhookEndpointAdmin(CentralTableAdmin):
    list_display = (
        "endpoint_id",
        "tenant_id",
        "url",
        "event_types",
        "secret_prefix",
        "is_active",
        "created_at",
    )
    search_fields = ("endpoint_id", "tenant_id", "url")
    list_filter = ("is_active",)
    exact_filter_fields = ("tenant_id",)
    ordering = ("-created_at",)
    # The ciphertext is the signing secret; the prefix tells secrets apart.
    secret_fields = ("encrypted_secret",)

    def get_detail_links(self, request: HttpRequest, obj: Any) -> list[tuple[str, str]]:
        page = _reverse_or_none("admin:portal-tenant-webhooks", obj.tenant_id)
        links = [("Manage and test", page)] if page else []
        return [
            *links,
            ("Deliveries", _changelist(TenantWebhookDelivery, endpoint_id__exact=obj.endpoint_id)),
        ]


@admin.register(TenantWebhookDelivery)
class TenantWebhookDeliveryAdmin(CentralTableAdmin):
    list_display = (
        "delivery_id",
        "tenant_id",
        "endpoint_id",
        "event_type",
        "status",
        "attempts",
        "response_status",
        "next_attempt_at",
        "created_at",
    )
    search_fields = ("delivery_id", "tenant_id", "event_id")
    list_filter = ("status", "event_type", "created_at")
    exact_filter_fields = ("tenant_id", "endpoint_id", "event_id")
    ordering = ("-created_at",)


# --- each tenant's own dataset --------------------------------------------------------------------------
@admin.register(TenantPipelineRun)
class TenantPipelineRunAdmin(TenantDatasetAdmin):
    list_display = (
        "pipeline_logging_id",
        "pipeline_id",
        "status",
        "trigger_type",
        "trigger_by",
        "start_time",
        "end_time",
        "duration_ms",
    )
    search_fields = ("pipeline_logging_id", "pipeline_id")
    list_filter = ("start_time",)
    exact_filter_fields = ("status", "pipeline_id", "trigger_type")
    ordering = ("-start_time",)

    def get_detail_links(self, request: HttpRequest, obj: Any) -> list[tuple[str, str]]:
        run = {"tenant_id": obj.tenant_id, "pipeline_logging_id__exact": obj.pipeline_logging_id}
        return [
            ("Step logs", _changelist(TenantStepLog, **run)),
            ("Data-quality results", _changelist(TenantDqResult, **run)),
        ]


@admin.register(TenantStepLog)
class TenantStepLogAdmin(TenantDatasetAdmin):
    list_display = (
        "step_logging_id",
        "pipeline_logging_id",
        "step_index",
        "step_name",
        "step_type",
        "status",
        "start_time",
        "duration_ms",
        "rows_processed",
    )
    search_fields = ("step_name", "pipeline_logging_id")
    list_filter = ("start_time",)
    exact_filter_fields = ("pipeline_logging_id", "status", "step_type")
    ordering = ("-start_time", "step_index")


@admin.register(TenantDqResult)
class TenantDqResultAdmin(TenantDatasetAdmin):
    list_display = (
        "dq_result_id",
        "pipeline_logging_id",
        "target_table",
        "overall_status",
        "expectations_passed",
        "expectations_failed",
        "executed_at",
        "ingestion_date",
    )
    search_fields = ("target_table", "pipeline_logging_id")
    list_filter = ("overall_status", "ingestion_date")
    exact_filter_fields = ("pipeline_logging_id", "target_table", "dq_config_id")
    ordering = ("-executed_at",)


# --- Django's own database ------------------------------------------------------------------------------
@admin.register(AdminApiToken)
class AdminApiTokenAdmin(admin.ModelAdmin):
    """Staff API tokens, read-only: `create_admin_token` issues them and `revoke_admin_token` revokes them."""

    list_display = ("token_prefix", "name", "user", "created_at", "expires_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("token_prefix", "name", "user__username")
    ordering = ("-created_at",)
    # Only the hash is stored, and even that is not shown: it is all a lookup needs.
    fields = ("token_prefix", "name", "user", "created_at", "expires_at", "last_used_at", "revoked_at")
    readonly_fields = fields

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_active and request.user.is_staff)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
