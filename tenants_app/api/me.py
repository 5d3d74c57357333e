"""What a tenant's own key sees about its tenant: profile, subscription, usage."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from tenants_app.api.paging import PageFilterSerializer, page_response, page_serializer
from tenants_app.api.scoping import TenantScopedApi
from tenants_app.api.tenants import TenantOutputSerializer
from tenants_app.api.timestamps import TimestampField
from tenants_app.models import TenantUsageQuota
from tenants_app.services.subscription_selectors import MAX_USAGE_DAYS, usage_list
from tenants_app.services.tenants import tenant_get_cached


class MeApi(TenantScopedApi):
    class OutputSerializer(serializers.Serializer):
        tenant = TenantOutputSerializer()
        api_key_id = serializers.CharField()
        scopes = serializers.ListField(child=serializers.CharField())

    @extend_schema(summary="Get the calling key's tenant and scopes", responses=OutputSerializer)
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
    created_at = TimestampField()
    updated_at = TimestampField(allow_null=True)


class UsageOutputSerializer(serializers.Serializer):
    """One UTC day of a tenant's usage: pipeline runs against their limits, and API calls."""

    usage_date = serializers.DateField(help_text="The UTC day.")
    pipelines_run_today = serializers.IntegerField(help_text="Runs admitted that day.")
    pipelines_succeeded_today = serializers.IntegerField()
    pipelines_failed_today = serializers.IntegerField()
    pipelines_run_month = serializers.IntegerField(help_text="Runs admitted in the month up to that day.")
    concurrent_pipelines_running = serializers.IntegerField()
    daily_limit = serializers.IntegerField()
    monthly_limit = serializers.IntegerField(allow_null=True)
    concurrent_limit = serializers.IntegerField(allow_null=True)
    api_calls_today = serializers.SerializerMethodField(
        help_text=(
            "Calls the tenant's API keys made that day, as far as the rate limits admitted them (a refused "
            "call is not counted). Written in batches (API_CALLS_FLUSH_SECONDS), so the last seconds' "
            "calls may not show yet."
        )
    )
    last_updated = TimestampField()

    def get_api_calls_today(self, row: TenantUsageQuota) -> int:
        # Rows from before API calls were counted hold NULL: no call was counted that day.
        return row.total_api_calls_today or 0


class UsageApi(TenantScopedApi):
    class FilterSerializer(PageFilterSerializer):
        # Every day of the longest period fits one page.
        max_page_size = MAX_USAGE_DAYS
        default_page_size = MAX_USAGE_DAYS
        days = serializers.IntegerField(
            min_value=1,
            max_value=MAX_USAGE_DAYS,
            default=30,
            help_text="The last N UTC days, today included.",
        )

    @extend_schema(
        summary="List daily usage: runs and API calls",
        parameters=[FilterSerializer],
        responses=page_serializer(UsageOutputSerializer),
    )
    def get(self, request: Request, tenant_id: str | None = None) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        rows = usage_list(tenant_id=self.tenant_id(), **filters.other_filters())
        return page_response(filters.page_of(rows), UsageOutputSerializer)
