"""Pipeline runs and the execution queue: read by staff and tenants; cancel and re-queue."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tenants_app.api.paging import PageFilterSerializer, page_response, page_serializer
from tenants_app.api.scoping import TenantScopedApi
from tenants_app.api.timestamps import TimestampField
from tenants_app.models import DataQualityStatus, RunState
from tenants_app.services.run_actions import run_cancel, run_requeue
from tenants_app.services.run_common import MAX_PAGE_SIZE
from tenants_app.services.run_selectors import queue_list, run_get, run_list


class RunOutputSerializer(serializers.Serializer):
    run_id = serializers.CharField()
    tenant_id = serializers.CharField()
    config_id = serializers.CharField()
    pipeline_id = serializers.CharField()
    state = serializers.ChoiceField(choices=RunState.choices)
    scheduled_time = TimestampField()
    priority = serializers.IntegerField(help_text="1 = most urgent")
    parameters = serializers.JSONField(allow_null=True)
    retry_count = serializers.IntegerField()
    max_retries = serializers.IntegerField()
    started_at = TimestampField(allow_null=True)
    worker_id = serializers.CharField(allow_null=True)
    completed_at = TimestampField(allow_null=True)
    failed_at = TimestampField(allow_null=True)
    error_message = serializers.CharField(allow_null=True)
    pipeline_logging_id = serializers.CharField(allow_null=True)
    created_at = TimestampField()


class QueueEntryOutputSerializer(serializers.Serializer):
    run_id = serializers.CharField()
    tenant_id = serializers.CharField()
    config_id = serializers.CharField(allow_null=True)
    pipeline_id = serializers.CharField()
    state = serializers.ChoiceField(choices=RunState.choices)
    priority = serializers.IntegerField(help_text="1 = most urgent")
    scheduled_time = TimestampField()
    added_at = TimestampField()
    available_at = TimestampField(allow_null=True, help_text="Held back until (retry backoff)")
    attempt = serializers.IntegerField(allow_null=True)
    lease_owner = serializers.CharField(
        allow_null=True, help_text="The worker holding it, or last holding it"
    )
    lease_expires_at = TimestampField(allow_null=True)
    heartbeat_at = TimestampField(allow_null=True)
    processing_started_at = TimestampField(allow_null=True)


class ExecutionOutputSerializer(serializers.Serializer):
    pipeline_logging_id = serializers.CharField()
    status = serializers.CharField()
    start_time = TimestampField()
    end_time = TimestampField(allow_null=True)
    duration_ms = serializers.IntegerField(allow_null=True)
    run_metadata = serializers.JSONField(allow_null=True)
    error_message = serializers.CharField(allow_null=True)


class StepLogOutputSerializer(serializers.Serializer):
    pipeline_logging_id = serializers.CharField()
    step_index = serializers.IntegerField()
    step_name = serializers.CharField()
    step_type = serializers.CharField()
    status = serializers.CharField()
    start_time = TimestampField()
    end_time = TimestampField(allow_null=True)
    duration_ms = serializers.IntegerField(allow_null=True)
    rows_processed = serializers.IntegerField(allow_null=True)
    error_message = serializers.CharField(allow_null=True)
    metadata = serializers.JSONField(allow_null=True)


class DqResultOutputSerializer(serializers.Serializer):
    pipeline_logging_id = serializers.CharField()
    target_table = serializers.CharField()
    dq_config_id = serializers.CharField()
    executed_at = TimestampField()
    expectations_passed = serializers.IntegerField()
    expectations_failed = serializers.IntegerField()
    failed_expectations = serializers.JSONField(allow_null=True)
    overall_status = serializers.ChoiceField(choices=DataQualityStatus.choices)


class RunListApi(TenantScopedApi):
    read_scope = "pipelines:read"
    write_scope = "pipelines:manage"

    class FilterSerializer(PageFilterSerializer):
        max_page_size = MAX_PAGE_SIZE
        state = serializers.ChoiceField(choices=RunState.choices, required=False)
        config_id = serializers.CharField(required=False, max_length=128)
        since = TimestampField(required=False, help_text="Scheduled at or after")
        until = TimestampField(required=False, help_text="Scheduled before")

    @extend_schema(
        summary="List runs", parameters=[FilterSerializer], responses=page_serializer(RunOutputSerializer)
    )
    def get(self, request: Request, tenant_id: str | None = None) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        page = run_list(tenant_id=self.tenant_id(), **filters.validated_data)
        return page_response(page, RunOutputSerializer)


class RunDetailApi(TenantScopedApi):
    read_scope = "pipelines:read"
    write_scope = "pipelines:manage"

    class OutputSerializer(serializers.Serializer):
        run = RunOutputSerializer()
        queue_entry = QueueEntryOutputSerializer(allow_null=True, source="entry")
        executions = ExecutionOutputSerializer(many=True)
        step_logs = StepLogOutputSerializer(many=True)
        dq_results = DqResultOutputSerializer(many=True)

    @extend_schema(
        summary="Get a run with its attempts, step logs and DQ results", responses=OutputSerializer
    )
    def get(self, request: Request, run_id: str, tenant_id: str | None = None) -> Response:
        detail = run_get(tenant_id=self.tenant_id(), run_id=run_id)
        return Response(self.OutputSerializer(detail).data)


class RunCancelApi(TenantScopedApi):
    read_scope = "pipelines:read"
    write_scope = "pipelines:manage"

    class InputSerializer(serializers.Serializer):
        reason = serializers.CharField(required=False, allow_blank=True, max_length=500, default="")

    @extend_schema(summary="Cancel a run", request=InputSerializer, responses=RunOutputSerializer)
    def post(self, request: Request, run_id: str, tenant_id: str | None = None) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        run = run_cancel(
            tenant_id=self.tenant_id(),
            run_id=run_id,
            actor=self.actor(request),
            reason=data.validated_data["reason"],
        )
        return Response(RunOutputSerializer(run).data)


class RunRequeueApi(TenantScopedApi):
    read_scope = "pipelines:read"
    write_scope = "pipelines:manage"

    @extend_schema(
        summary="Queue a failed or cancelled run again", request=None, responses=RunOutputSerializer
    )
    def post(self, request: Request, run_id: str, tenant_id: str | None = None) -> Response:
        run = run_requeue(tenant_id=self.tenant_id(), run_id=run_id, actor=self.actor(request))
        return Response(RunOutputSerializer(run).data)


class QueueListApi(APIView):
    """Staff: the execution queue of every tenant, in claim order."""

    class FilterSerializer(PageFilterSerializer):
        max_page_size = MAX_PAGE_SIZE
        tenant_id = serializers.CharField(required=False, max_length=64)
        state = serializers.ChoiceField(choices=RunState.choices, required=False)

    @extend_schema(
        summary="List the execution queue",
        parameters=[FilterSerializer],
        responses=page_serializer(QueueEntryOutputSerializer),
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        return page_response(queue_list(**filters.validated_data), QueueEntryOutputSerializer)
