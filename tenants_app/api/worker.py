"""The worker API (/api/v1/worker/...): external pipeline workers claim, heartbeat, complete and fail runs.

Two kinds of callers: a tenant API key with the `pipelines:execute` scope (only that tenant's runs),
or a worker token (`Authorization: Bearer cvg_admin_...`, issued by `create_worker_token`) of a user
in PIPELINE_WORKERS_GROUP, which may drain every tenant's queue and nothing else.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import authentication, exceptions, serializers, status
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tenants_app.api.authentication import TenantApiKeyAuthentication
from tenants_app.api.timestamps import TimestampField
from tenants_app.models import AdminApiToken, RunState
from tenants_app.services.admin_tokens import TOKEN_PREFIX, is_pipeline_worker, worker_token_authenticate
from tenants_app.services.run_claims import ClaimedRun, runs_claim
from tenants_app.services.run_common import (
    COMPLETION_STATES,
    MAX_DQ_RESULTS,
    MAX_ERROR_LENGTH,
    MAX_STEP_LOGS,
    STEP_STATES,
)
from tenants_app.services.run_queue import run_heartbeat
from tenants_app.services.run_reports import run_complete, run_fail

EXECUTE_SCOPE = "pipelines:execute"


def _example(name: str, value: dict[str, Any]) -> list[OpenApiExample]:
    """One request that passes: what the docs show, and what the fuzzing sends besides generated ones."""
    return [OpenApiExample(name, value=value, request_only=True)]


class WorkerTokenAuthentication(authentication.BaseAuthentication):
    """Bearer tokens of pipeline-worker accounts (which need not be staff); a bad token is a 401."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[User, AdminApiToken] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        scheme, _, credentials = header.partition(" ")
        if scheme != self.keyword or not credentials.startswith(TOKEN_PREFIX):
            return None
        token = worker_token_authenticate(plaintext=credentials.strip())
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked worker token.")
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


class WorkerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "tenants_app.api.worker.WorkerTokenAuthentication"
    name = "WorkerToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "description": "A pipeline worker's token."}


class IsPipelineWorker(BasePermission):
    """A tenant key with `pipelines:execute`, or a worker token."""

    message = f"Pipeline workers only: a tenant API key with {EXECUTE_SCOPE!r}, or a worker token."

    def has_permission(self, request: Request, view: APIView) -> bool:
        principal = request.user
        if hasattr(principal, "has_scope"):
            if not principal.has_scope(EXECUTE_SCOPE):
                self.message = f"This API key lacks the {EXECUTE_SCOPE!r} scope."
                return False
            return True
        if isinstance(request.successful_authenticator, WorkerTokenAuthentication):
            # The token was verified as a pipeline worker's (from the cache): no second look at groups.
            return True
        return is_pipeline_worker(principal)


class WorkerApi(APIView):
    authentication_classes = [TenantApiKeyAuthentication, WorkerTokenAuthentication]
    permission_classes = [IsPipelineWorker]

    def tenant_scope(self) -> str | None:
        """A tenant key's own tenant; None for a worker token (every tenant)."""
        tenant_id = getattr(self.request.user, "tenant_id", None)
        return str(tenant_id) if tenant_id else None

    def credential(self) -> str:
        """Which key or token is calling: a lease belongs to it, not only to the worker_id it sends."""
        api_key_id = getattr(self.request.user, "api_key_id", None)
        if api_key_id is not None:
            return f"api_key:{api_key_id}"
        return f"token:{self.request.auth.pk}"


class LeaseOutputSerializer(serializers.Serializer):
    run_id = serializers.CharField()
    worker_id = serializers.CharField()
    attempt = serializers.IntegerField()
    lease_expires_at = TimestampField()


class RunStateOutputSerializer(serializers.Serializer):
    """The run after a report: its state, retries, and when it may be claimed again."""

    run_id = serializers.CharField()
    tenant_id = serializers.CharField()
    state = serializers.ChoiceField(choices=RunState.choices)
    retry_count = serializers.IntegerField()
    max_retries = serializers.IntegerField()
    pipeline_logging_id = serializers.CharField(allow_null=True)
    completed_at = TimestampField(allow_null=True)
    failed_at = TimestampField(allow_null=True)
    error_message = serializers.CharField(allow_null=True)


class WorkerClaimApi(WorkerApi):
    class InputSerializer(serializers.Serializer):
        worker_id = serializers.CharField(max_length=200, help_text="Your worker's stable name.")
        lease_seconds = serializers.IntegerField(
            required=False, help_text="How long the claim holds without a heartbeat (default 300)."
        )
        tenant_id = serializers.CharField(
            required=False, max_length=64, help_text="Worker tokens only: claim this tenant's runs only."
        )
        max_runs = serializers.IntegerField(
            required=False,
            min_value=1,
            max_value=settings.PIPELINE_CLAIM_MAX_RUNS,
            help_text='Claim up to this many runs at once; the answer is then {"runs": [...]}.',
        )

    class OutputSerializer(serializers.Serializer):
        run_id = serializers.CharField()
        tenant_id = serializers.CharField()
        pipeline_id = serializers.CharField()
        config_id = serializers.CharField(allow_null=True)
        parameters = serializers.JSONField(allow_null=True)
        priority = serializers.IntegerField(help_text="1 = most urgent")
        scheduled_time = TimestampField()
        attempt = serializers.IntegerField(help_text="Send it back with heartbeat, complete and fail.")
        retry_count = serializers.IntegerField()
        max_retries = serializers.IntegerField()
        worker_id = serializers.CharField()
        lease_expires_at = TimestampField()

    @extend_schema(
        summary="Claim queued runs",
        request=InputSerializer,
        responses={
            200: OpenApiResponse(
                response=OutputSerializer,
                description='The run claimed; with `max_runs`, {"runs": [...]} of up to that many.',
            ),
            204: OpenApiResponse(description="Nothing to claim now."),
            429: OpenApiResponse(description="A tenant key's runs are all held back by its quota."),
        },
        examples=_example("A worker's claim", {"worker_id": "worker-1", "lease_seconds": 300}),
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        tenant_id = self.tenant_scope()
        if tenant_id is not None and values.get("tenant_id") not in (None, tenant_id):
            raise exceptions.ValidationError(
                {"tenant_id": ["A tenant key claims its own tenant's runs only."]}
            )
        # Restricted to one tenant, runs held back only by its quota answer 429 with Retry-After.
        claimed: list[ClaimedRun] = runs_claim(
            worker_id=values["worker_id"],
            credential=self.credential(),
            tenant_id=tenant_id or values.get("tenant_id"),
            max_runs=values.get("max_runs", 1),
            lease_seconds=values.get("lease_seconds"),
        )
        if not claimed:
            return Response(status=status.HTTP_204_NO_CONTENT)
        if "max_runs" in values:
            return Response({"runs": self.OutputSerializer(claimed, many=True).data})
        # Without max_runs, the one run as the object itself (how claims answered before batches).
        return Response(self.OutputSerializer(claimed[0]).data)


class WorkerHeartbeatApi(WorkerApi):
    class InputSerializer(serializers.Serializer):
        worker_id = serializers.CharField(max_length=200)
        attempt = serializers.IntegerField(required=False, min_value=1)
        lease_seconds = serializers.IntegerField(required=False)

    @extend_schema(
        summary="Extend a claimed run's lease",
        request=InputSerializer,
        responses=LeaseOutputSerializer,
        examples=_example("Still working", {"worker_id": "worker-1", "attempt": 1}),
    )
    def post(self, request: Request, run_id: str) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        lease = run_heartbeat(
            run_id=run_id, tenant_id=self.tenant_scope(), credential=self.credential(), **data.validated_data
        )
        return Response(LeaseOutputSerializer(lease).data)


class StepLogInputSerializer(serializers.Serializer):
    step_index = serializers.IntegerField(min_value=0)
    step_name = serializers.CharField(max_length=200)
    step_type = serializers.CharField(max_length=64)
    status = serializers.ChoiceField(choices=STEP_STATES)
    start_time = TimestampField()
    end_time = TimestampField(required=False, allow_null=True, default=None)
    duration_ms = serializers.IntegerField(required=False, allow_null=True, min_value=0, default=None)
    rows_processed = serializers.IntegerField(required=False, allow_null=True, min_value=0, default=None)
    error_message = serializers.CharField(
        required=False, allow_null=True, max_length=MAX_ERROR_LENGTH, default=None
    )
    metadata = serializers.JSONField(required=False, allow_null=True, default=None)


class DqResultInputSerializer(serializers.Serializer):
    target_table = serializers.CharField(max_length=1024)
    dq_config_id = serializers.CharField(max_length=128)
    executed_at = TimestampField()
    expectations_passed = serializers.IntegerField(min_value=0)
    expectations_failed = serializers.IntegerField(min_value=0)
    failed_expectations = serializers.JSONField(required=False, allow_null=True, default=None)
    overall_status = serializers.ChoiceField(choices=["PASS", "WARNING", "FAIL"])


class WorkerCompleteApi(WorkerApi):
    class InputSerializer(serializers.Serializer):
        worker_id = serializers.CharField(max_length=200)
        attempt = serializers.IntegerField(required=False, min_value=1)
        status = serializers.ChoiceField(
            choices=COMPLETION_STATES, help_text="FAILED here is final; use /fail for a retryable error."
        )
        started_at = TimestampField(required=False)
        ended_at = TimestampField(required=False)
        step_logs = StepLogInputSerializer(many=True, required=False, max_length=MAX_STEP_LOGS)
        dq_results = DqResultInputSerializer(many=True, required=False, max_length=MAX_DQ_RESULTS)
        run_metadata = serializers.JSONField(required=False, allow_null=True)
        error = serializers.CharField(required=False, allow_null=True, max_length=MAX_ERROR_LENGTH)

    @extend_schema(
        summary="Report a run finished",
        request=InputSerializer,
        responses=RunStateOutputSerializer,
        examples=_example("Done", {"worker_id": "worker-1", "attempt": 1, "status": "SUCCEEDED"}),
    )
    def post(self, request: Request, run_id: str) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        run = run_complete(
            run_id=run_id, tenant_id=self.tenant_scope(), credential=self.credential(), **data.validated_data
        )
        return Response(RunStateOutputSerializer(run).data)


class WorkerFailApi(WorkerApi):
    class InputSerializer(serializers.Serializer):
        worker_id = serializers.CharField(max_length=200)
        attempt = serializers.IntegerField(required=False, min_value=1)
        error = serializers.CharField(max_length=MAX_ERROR_LENGTH)

    @extend_schema(
        summary="Report a retryable failure of a run",
        request=InputSerializer,
        responses=RunStateOutputSerializer,
        examples=_example("A retryable error", {"worker_id": "worker-1", "error": "Upstream timed out"}),
    )
    def post(self, request: Request, run_id: str) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        run = run_fail(
            run_id=run_id, tenant_id=self.tenant_scope(), credential=self.credential(), **data.validated_data
        )
        return Response(RunStateOutputSerializer(run).data)
