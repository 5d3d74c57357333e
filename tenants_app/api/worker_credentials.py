"""`POST /api/v1/worker/runs/{run_id}/credentials`: the cloud credentials of a run, for its lease holder only.

POST, not GET: the call hands out secrets and writes an audit entry per credential, so it is neither
safe nor cacheable, and like every other worker call it takes `worker_id` and `attempt` in a JSON body
(a query string lands in proxies' and servers' access logs). The answer is `no-store`, never stored
for idempotent replay (no `Idempotency-Key` here), and its body is never logged: the access line has
method, path, status and duration only (tenants_app/middleware.py).
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from tenants_app.api.scoping import TenantScopedApi
from tenants_app.api.timestamps import TimestampField
from tenants_app.api.worker import WorkerApi
from tenants_app.services.run_credentials import run_credentials_fetch


class RunCredentialOutputSerializer(serializers.Serializer):
    credential_id = serializers.CharField()
    provider = serializers.CharField()
    name = serializers.CharField(allow_null=True)
    type = serializers.CharField(source="credential_type", allow_null=True)
    fingerprint = serializers.CharField(allow_null=True)
    payload = serializers.JSONField(help_text="The decrypted secret: keep it in memory only.")


class RunCredentialsOutputSerializer(serializers.Serializer):
    run_id = serializers.CharField()
    tenant_id = serializers.CharField()
    pipeline_id = serializers.CharField()
    attempt = serializers.IntegerField()
    lease_expires_at = TimestampField()
    providers = serializers.ListField(child=serializers.CharField(), help_text="What the template needs.")
    missing_providers = serializers.ListField(
        child=serializers.CharField(), help_text="Needed providers the tenant has no active credential for."
    )
    credentials = RunCredentialOutputSerializer(many=True)


class WorkerRunCredentialsApi(WorkerApi):
    class InputSerializer(serializers.Serializer):
        worker_id = serializers.CharField(max_length=200)
        attempt = serializers.IntegerField(min_value=1, help_text="The attempt of your claim.")

    @extend_schema(
        summary="Fetch the credentials of a claimed run",
        request=InputSerializer,
        responses={
            200: OpenApiResponse(
                response=RunCredentialsOutputSerializer,
                description="The decrypted credentials of each provider the run's template needs.",
            ),
            409: OpenApiResponse(
                description="`lease_lost`: the lease is not yours, not this attempt's, expired or over."
            ),
        },
        examples=[
            OpenApiExample(
                "The credentials of a held run",
                value={"worker_id": "worker-1", "attempt": 1},
                request_only=True,
            )
        ],
    )
    def post(self, request: Request, run_id: str) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fetched = run_credentials_fetch(
            run_id=run_id,
            tenant_id=self.tenant_scope(),
            credential=self.credential(),
            # Who is audited: `apikey:<id>`, or the worker token's account as `user:<name>`.
            actor=TenantScopedApi.actor(request),
            **data.validated_data,
        )
        response = Response(RunCredentialsOutputSerializer(fetched).data)
        # Set here, not left to the API-wide default: this answer must never be kept by anyone.
        response["Cache-Control"] = "no-store"
        response["Pragma"] = "no-cache"
        return response
