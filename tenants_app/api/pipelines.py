"""Pipeline configs (schedules) of one tenant: list, create, read, change, pause, resume, delete, run now."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from tenants_app.api.idempotency import idempotent
from tenants_app.api.paging import PageFilterSerializer, page_response, page_serializer
from tenants_app.api.runs import RunOutputSerializer
from tenants_app.api.scoping import TenantScopedApi
from tenants_app.api.timestamps import TimestampField
from tenants_app.models import Provider
from tenants_app.services.pipelines import (
    DEFAULT_PRIORITY,
    MAX_PAGE_SIZE,
    MAX_PRIORITY,
    MIN_PRIORITY,
    pipeline_config_create,
    pipeline_config_delete,
    pipeline_config_get,
    pipeline_config_list,
    pipeline_config_pause,
    pipeline_config_resume,
    pipeline_config_run_now,
    pipeline_config_update,
)

PRIORITY_HELP = "1 (most urgent) to 10 (least urgent); workers claim lower numbers first."
CRON_HELP = "5 fields: minute hour day-of-month month day-of-week, read in `timezone`, e.g. '30 2 * * *'."


class PipelineConfigOutputSerializer(serializers.Serializer):
    config_id = serializers.CharField()
    tenant_id = serializers.CharField()
    provider = serializers.ChoiceField(choices=Provider.choices)
    domain = serializers.CharField()
    pipeline_template = serializers.CharField(
        help_text="What the workers run: the `pipeline_id` of its runs."
    )
    schedule_cron = serializers.CharField(help_text=CRON_HELP)
    timezone = serializers.CharField(help_text="IANA time zone the schedule is read in.")
    is_active = serializers.BooleanField(allow_null=True)
    next_run_time = TimestampField(allow_null=True, help_text="Next slot (UTC); empty while paused.")
    last_run_time = TimestampField(allow_null=True)
    last_run_status = serializers.CharField(allow_null=True)
    parameters = serializers.JSONField(allow_null=True)
    priority = serializers.IntegerField(allow_null=True, help_text=PRIORITY_HELP)
    created_at = TimestampField()
    created_by = serializers.CharField(allow_null=True)
    updated_at = TimestampField(allow_null=True)
    updated_by = serializers.CharField(allow_null=True)


class _ConfigFields(serializers.Serializer):
    """Field shapes only: the services check cron, time zone, priority range and parameters."""

    provider = serializers.ChoiceField(choices=Provider.choices)
    domain = serializers.CharField(max_length=200)
    pipeline_template = serializers.CharField(
        max_length=200, help_text="A template of GET /api/v1/pipeline-templates."
    )
    schedule_cron = serializers.CharField(max_length=200, help_text=CRON_HELP)
    timezone = serializers.CharField(max_length=64, help_text="IANA name, e.g. 'Europe/Berlin'.")
    parameters = serializers.JSONField(
        allow_null=True, help_text="The template's parameters: a JSON object (at most 16 KiB), no secrets."
    )
    # The bounds are the service's; here they put minimum/maximum into the schema (found by fuzzing).
    priority = serializers.IntegerField(
        min_value=MIN_PRIORITY, max_value=MAX_PRIORITY, help_text=PRIORITY_HELP
    )
    is_active = serializers.BooleanField()


def _service_values(validated: dict[str, object]) -> dict[str, object]:
    values = dict(validated)
    if "timezone" in values:
        values["timezone_name"] = values.pop("timezone")
    return values


class PipelineConfigListApi(TenantScopedApi):
    read_scope = "pipelines:read"
    write_scope = "pipelines:manage"

    class FilterSerializer(PageFilterSerializer):
        max_page_size = MAX_PAGE_SIZE
        is_active = serializers.BooleanField(required=False, allow_null=True, default=None)
        provider = serializers.ChoiceField(choices=Provider.choices, required=False)

    class InputSerializer(_ConfigFields):
        timezone = serializers.CharField(max_length=64, default="UTC", help_text="IANA name; default UTC.")
        parameters = serializers.JSONField(required=False, allow_null=True, default=None)
        priority = serializers.IntegerField(
            required=False,
            default=DEFAULT_PRIORITY,
            min_value=MIN_PRIORITY,
            max_value=MAX_PRIORITY,
            help_text=PRIORITY_HELP,
        )
        is_active = serializers.BooleanField(required=False, default=True)

    @extend_schema(
        summary="List pipeline schedules",
        parameters=[FilterSerializer],
        responses=page_serializer(PipelineConfigOutputSerializer),
    )
    def get(self, request: Request, tenant_id: str | None = None) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        page = pipeline_config_list(tenant_id=self.tenant_id(), **filters.validated_data)
        return page_response(page, PipelineConfigOutputSerializer)

    @extend_schema(
        summary="Create a pipeline schedule",
        request=InputSerializer,
        responses={201: PipelineConfigOutputSerializer},
        examples=[
            OpenApiExample(
                "Nightly costs",
                value={
                    "provider": "GCP",
                    "domain": "billing",
                    "pipeline_template": "sql_transform",
                    "schedule_cron": "30 2 * * *",
                    "timezone": "Europe/Berlin",
                    "parameters": {
                        "source_query": "SELECT day, SUM(cost) AS cost FROM {{costs}} GROUP BY day",
                        "destination_table": "daily_costs",
                    },
                    "priority": 5,
                },
                request_only=True,
            )
        ],
    )
    @idempotent
    def post(self, request: Request, tenant_id: str | None = None) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        config = pipeline_config_create(
            tenant_id=self.tenant_id(), actor=self.actor(request), **_service_values(data.validated_data)
        )
        return Response(PipelineConfigOutputSerializer(config).data, status=status.HTTP_201_CREATED)


class PipelineConfigDetailApi(TenantScopedApi):
    read_scope = "pipelines:read"
    write_scope = "pipelines:manage"

    class InputSerializer(serializers.Serializer):
        """Any subset of the fields; a new schedule, time zone or activation recomputes the next run."""

        provider = serializers.ChoiceField(choices=Provider.choices, required=False)
        domain = serializers.CharField(max_length=200, required=False)
        pipeline_template = serializers.CharField(max_length=200, required=False)
        schedule_cron = serializers.CharField(max_length=200, required=False, help_text=CRON_HELP)
        timezone = serializers.CharField(max_length=64, required=False, help_text="IANA name.")
        parameters = serializers.JSONField(
            required=False, allow_null=True, help_text="A JSON object, or null."
        )
        priority = serializers.IntegerField(
            required=False, min_value=MIN_PRIORITY, max_value=MAX_PRIORITY, help_text=PRIORITY_HELP
        )
        is_active = serializers.BooleanField(required=False)

    @extend_schema(summary="Get a pipeline schedule", responses=PipelineConfigOutputSerializer)
    def get(self, request: Request, config_id: str, tenant_id: str | None = None) -> Response:
        config = pipeline_config_get(tenant_id=self.tenant_id(), config_id=config_id)
        return Response(PipelineConfigOutputSerializer(config).data)

    @extend_schema(
        summary="Change a pipeline schedule",
        request=InputSerializer,
        responses=PipelineConfigOutputSerializer,
        examples=[
            OpenApiExample(
                "A later slot", value={"schedule_cron": "0 4 * * 1-5", "priority": 3}, request_only=True
            )
        ],
    )
    def patch(self, request: Request, config_id: str, tenant_id: str | None = None) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        config = pipeline_config_update(
            tenant_id=self.tenant_id(),
            config_id=config_id,
            actor=self.actor(request),
            **_service_values(data.validated_data),
        )
        return Response(PipelineConfigOutputSerializer(config).data)

    @extend_schema(summary="Delete a pipeline schedule", request=None, responses={204: None})
    def delete(self, request: Request, config_id: str, tenant_id: str | None = None) -> Response:
        pipeline_config_delete(tenant_id=self.tenant_id(), config_id=config_id, actor=self.actor(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class PipelineConfigPauseApi(TenantScopedApi):
    read_scope = "pipelines:read"
    write_scope = "pipelines:manage"

    @extend_schema(
        summary="Pause a pipeline schedule", request=None, responses=PipelineConfigOutputSerializer
    )
    def post(self, request: Request, config_id: str, tenant_id: str | None = None) -> Response:
        config = pipeline_config_pause(
            tenant_id=self.tenant_id(), config_id=config_id, actor=self.actor(request)
        )
        return Response(PipelineConfigOutputSerializer(config).data)


class PipelineConfigResumeApi(TenantScopedApi):
    read_scope = "pipelines:read"
    write_scope = "pipelines:manage"

    @extend_schema(
        summary="Resume a paused pipeline schedule", request=None, responses=PipelineConfigOutputSerializer
    )
    def post(self, request: Request, config_id: str, tenant_id: str | None = None) -> Response:
        config = pipeline_config_resume(
            tenant_id=self.tenant_id(), config_id=config_id, actor=self.actor(request)
        )
        return Response(PipelineConfigOutputSerializer(config).data)


class PipelineConfigRunNowApi(TenantScopedApi):
    read_scope = "pipelines:read"
    # Runs consume quota: a tenant key needs the scope that is never granted by default.
    write_scope = "pipelines:execute"

    class OutputSerializer(serializers.Serializer):
        created = serializers.BooleanField(help_text="False when this minute's run was already queued.")
        run = RunOutputSerializer()

    @extend_schema(
        summary="Queue a run of a schedule now",
        request=None,
        responses={201: OutputSerializer, 200: OutputSerializer},
    )
    def post(self, request: Request, config_id: str, tenant_id: str | None = None) -> Response:
        manual = pipeline_config_run_now(
            tenant_id=self.tenant_id(), config_id=config_id, actor=self.actor(request)
        )
        data = self.OutputSerializer({"created": manual.created, "run": manual.run}).data
        return Response(data, status=status.HTTP_201_CREATED if manual.created else status.HTTP_200_OK)
