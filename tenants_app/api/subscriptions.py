"""A tenant's subscription: read by staff and the tenant; plan, status and limits changed by staff only."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response

from tenants_app.api.me import SubscriptionOutputSerializer
from tenants_app.api.scoping import TenantScopedApi
from tenants_app.models import PlanName, SubscriptionStatus, TenantProfile, TenantSubscription
from tenants_app.services.subscription_overrides import LIMIT_BOUNDS
from tenants_app.services.subscription_plan_change import subscription_change_plan_preview
from tenants_app.services.subscription_selectors import (
    LIMIT_FIELDS,
    subscription_effective_limits,
    subscription_effective_status,
    subscription_get,
)
from tenants_app.services.subscriptions import subscription_update
from tenants_app.services.tenant_capabilities import tenant_capabilities
from tenants_app.services.tenants import tenant_get_cached


class LimitsSerializer(serializers.Serializer):
    daily_limit = serializers.IntegerField()
    monthly_limit = serializers.IntegerField()
    concurrent_limit = serializers.IntegerField()
    max_providers = serializers.IntegerField()
    api_calls_per_minute = serializers.IntegerField()
    api_calls_per_hour = serializers.IntegerField()


class SubscriptionDetailSerializer(SubscriptionOutputSerializer):
    effective_status = serializers.CharField(help_text="TRIAL past its end date reads EXPIRED")
    allowed_operations = serializers.ListField(child=serializers.CharField())
    limits = LimitsSerializer(help_text="Limits in force: overrides, else the plan's figures")
    overridden = serializers.ListField(
        child=serializers.CharField(), help_text="Limits that differ from the plan"
    )


def subscription_detail(subscription: TenantSubscription, *, profile: TenantProfile) -> dict[str, Any]:
    """The subscription with its effective status, limits and what the tenant may do."""
    status = subscription_effective_status(subscription=subscription)
    limits = subscription_effective_limits(subscription=subscription)
    # The portal's status banner reads the same verdict: a suspended tenant may only be read, whatever
    # its subscription says.
    capabilities = tenant_capabilities(profile=profile, subscription=subscription)
    data = {field.name: getattr(subscription, field.name) for field in subscription._meta.fields}
    data.update(
        effective_status=status,
        allowed_operations=list(capabilities.allowed_operations),
        limits=limits.as_dict(),
        overridden=list(limits.overridden),
    )
    return data


def _limit_field(name: str) -> serializers.IntegerField:
    low, high = LIMIT_BOUNDS[name]
    return serializers.IntegerField(required=False, min_value=low, max_value=high)


class SubscriptionApi(TenantScopedApi):
    """GET for staff and the tenant (`tenant:read`); PATCH for staff who may write."""

    class InputSerializer(serializers.Serializer):
        plan = serializers.ChoiceField(choices=PlanName.choices, required=False)
        status = serializers.ChoiceField(choices=SubscriptionStatus.choices, required=False)
        trial_end_date = serializers.DateField(required=False)
        daily_limit = _limit_field("daily_limit")
        monthly_limit = _limit_field("monthly_limit")
        concurrent_limit = _limit_field("concurrent_limit")
        max_providers = _limit_field("max_providers")
        api_calls_per_minute = _limit_field("api_calls_per_minute")
        api_calls_per_hour = _limit_field("api_calls_per_hour")
        reset_limits = serializers.ListField(
            child=serializers.ChoiceField(choices=LIMIT_FIELDS), required=False, allow_empty=True
        )

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            if not attrs:
                raise serializers.ValidationError("Give a plan, a status, limits or reset_limits.")
            if "trial_end_date" in attrs and attrs.get("status") != SubscriptionStatus.TRIAL:
                raise serializers.ValidationError({"trial_end_date": ["Only with status TRIAL."]})
            return attrs

    @extend_schema(summary="Get the subscription and its limits", responses=SubscriptionDetailSerializer)
    def get(self, request: Request, tenant_id: str | None = None) -> Response:
        profile = tenant_get_cached(tenant_id=self.tenant_id())
        subscription = subscription_get(tenant_id=self.tenant_id())
        return Response(SubscriptionDetailSerializer(subscription_detail(subscription, profile=profile)).data)

    @extend_schema(
        summary="Change the plan, status or limits",
        request=InputSerializer,
        responses=SubscriptionDetailSerializer,
        examples=[
            OpenApiExample(
                "An upgrade with a higher daily limit",
                value={"plan": "PROFESSIONAL", "daily_limit": 60},
                request_only=True,
            )
        ],
    )
    def patch(self, request: Request, tenant_id: str | None = None) -> Response:
        """Change the plan (limits follow at once), per-tenant limits, then the status; each audited.

        The whole request is checked before the first write: a 400 changes nothing.
        """
        if tenant_id is None:
            raise PermissionDenied("A tenant cannot change its own subscription; contact support.")
        changes = self.InputSerializer(data=request.data)
        changes.is_valid(raise_exception=True)
        data = changes.validated_data
        # Read before the first write: once the change is made, only its audit entry may still fail.
        profile = tenant_get_cached(tenant_id=tenant_id)
        subscription = subscription_update(
            tenant_id=tenant_id,
            actor=self.actor(request),
            plan=data.get("plan"),
            status=data.get("status"),
            trial_end_date=data.get("trial_end_date"),
            limits={name: data[name] for name in LIMIT_FIELDS if name in data},
            reset=data.get("reset_limits", []),
        )
        return Response(SubscriptionDetailSerializer(subscription_detail(subscription, profile=profile)).data)


class SubscriptionPlanPreviewApi(TenantScopedApi):
    """What a plan change would do, before it is made (staff only, writes nothing)."""

    class InputSerializer(serializers.Serializer):
        plan = serializers.ChoiceField(choices=PlanName.choices)

    class OutputSerializer(serializers.Serializer):
        tenant_id = serializers.CharField()
        current_plan = serializers.CharField()
        new_plan = serializers.CharField()
        status = serializers.CharField()
        limits_before = LimitsSerializer()
        limits_after = LimitsSerializer()
        changes = serializers.DictField(child=serializers.ListField(child=serializers.IntegerField()))
        warnings = serializers.ListField(child=serializers.CharField())

    @extend_schema(summary="Preview a plan change", request=InputSerializer, responses=OutputSerializer)
    def post(self, request: Request, tenant_id: str | None = None) -> Response:
        if tenant_id is None:
            raise PermissionDenied("A tenant cannot change its own subscription; contact support.")
        choice = self.InputSerializer(data=request.data)
        choice.is_valid(raise_exception=True)
        preview = subscription_change_plan_preview(tenant_id=tenant_id, plan=choice.validated_data["plan"])
        data = {
            "tenant_id": preview.tenant_id,
            "current_plan": preview.current_plan,
            "new_plan": preview.new_plan,
            "status": preview.status,
            "limits_before": preview.limits_before.as_dict(),
            "limits_after": preview.limits_after.as_dict(),
            "changes": {name: list(pair) for name, pair in preview.changes.items()},
            "warnings": list(preview.warnings),
        }
        return Response(self.OutputSerializer(data).data)
