"""What a tenant's own key sees about its tenant: profile, subscription, usage."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from tenants_app.api.scoping import TenantScopedApi
from tenants_app.api.tenants import TenantOutputSerializer
from tenants_app.services.subscriptions import MAX_USAGE_DAYS, subscription_get, usage_list
from tenants_app.services.tenants import tenant_get_cached


class MeApi(TenantScopedApi):
    class OutputSerializer(serializers.Serializer):
        tenant = TenantOutputSerializer()
        api_key_id = serializers.CharField()
        scopes = serializers.ListField(child=serializers.CharField())

    @extend_schema(responses=OutputSerializer)
    def get(self, request: Request) -> Response:
        principal = request.user
        # From the cache, like the key check before it: polling /me costs no BigQuery job.
        tenant = tenant_get_cached(tenant_id=self.tenant_id())
        data = {"tenant": tenant, "api_key_id": principal.api_key_id}
        data["scopes"] = list(principal.scopes)
        return Response(self.OutputSerializer(data).data)


class SubscriptionOutputSerializer(serializers.Serializer):
    subscription_id = serializers.CharField()
    plan_name = serializers.CharField()
    status = serializers.CharField()
    daily_limit = serializers.IntegerField()
    monthly_limit = serializers.IntegerField()
    concurrent_limit = serializers.IntegerField()
    max_pipelines_per_day = serializers.IntegerField(allow_null=True)
    trial_end_date = serializers.DateField(allow_null=True)
    subscription_end_date = serializers.DateField(allow_null=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField(allow_null=True)


class UsageOutputSerializer(serializers.Serializer):
    usage_date = serializers.DateField()
    pipelines_run_today = serializers.IntegerField()
    pipelines_succeeded_today = serializers.IntegerField()
    pipelines_failed_today = serializers.IntegerField()
    pipelines_run_month = serializers.IntegerField()
    concurrent_pipelines_running = serializers.IntegerField()
    daily_limit = serializers.IntegerField()
    monthly_limit = serializers.IntegerField(allow_null=True)
    concurrent_limit = serializers.IntegerField(allow_null=True)
    last_updated = serializers.DateTimeField()


class SubscriptionApi(TenantScopedApi):
    @extend_schema(responses=SubscriptionOutputSerializer)
    def get(self, request: Request, tenant_id: str | None = None) -> Response:
        return Response(SubscriptionOutputSerializer(subscription_get(tenant_id=self.tenant_id())).data)


class UsageApi(TenantScopedApi):
    class FilterSerializer(serializers.Serializer):
        days = serializers.IntegerField(min_value=1, max_value=MAX_USAGE_DAYS, default=30)

    @extend_schema(parameters=[FilterSerializer], responses=UsageOutputSerializer(many=True))
    def get(self, request: Request, tenant_id: str | None = None) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        rows = usage_list(tenant_id=self.tenant_id(), days=filters.validated_data["days"])
        return Response(UsageOutputSerializer(rows, many=True).data)
