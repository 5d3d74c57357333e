"""Onboarding over the API: a dry run that validates, and the real thing (idempotent and resumable)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tenants_app.api.idempotency import HEADER, idempotent
from tenants_app.api.keys import ApiKeyOutputSerializer
from tenants_app.api.me import SubscriptionOutputSerializer
from tenants_app.api.tenants import TenantOutputSerializer
from tenants_app.models import PlanName
from tenants_app.services.onboarding import tenant_onboard, tenant_onboard_validate


class OnboardInputSerializer(serializers.Serializer):
    """Only shapes here: the service owns the rules (patterns, reserved names, plan catalogue)."""

    tenant_id = serializers.CharField(max_length=50)
    company_name = serializers.CharField(max_length=200, trim_whitespace=False)
    admin_email = serializers.CharField(max_length=254)
    plan = serializers.ChoiceField(choices=PlanName.choices)


# A request that passes: what the docs show, and what the fuzzing sends besides generated ones.
ONBOARD_EXAMPLE = OpenApiExample(
    "A new tenant",
    value={
        "tenant_id": "acme_analytics",
        "company_name": "Acme Analytics Ltd",
        "admin_email": "ops@acme.example.com",
        "plan": "STARTER",
    },
    request_only=True,
)


class TenantOnboardApi(APIView):
    class OutputSerializer(serializers.Serializer):
        tenant = TenantOutputSerializer(source="profile")
        subscription = SubscriptionOutputSerializer()
        dataset_id = serializers.CharField()
        api_key = serializers.CharField(
            allow_null=True, help_text="The first API key: shown in this response only."
        )
        key = ApiKeyOutputSerializer(allow_null=True)
        api_key_already_issued = serializers.BooleanField()
        resumed = serializers.BooleanField()
        performed = serializers.ListField(child=serializers.CharField())
        skipped = serializers.ListField(child=serializers.CharField())

    @extend_schema(
        request=OnboardInputSerializer,
        responses={201: OutputSerializer},
        parameters=[OpenApiParameter(HEADER, str, OpenApiParameter.HEADER, required=False)],
        examples=[ONBOARD_EXAMPLE],
    )
    @idempotent
    def post(self, request: Request) -> Response:
        data = OnboardInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        result = tenant_onboard(created_by=f"user:{request.user.get_username()}", **data.validated_data)
        issued = result.api_key
        output = {
            "profile": result.profile,
            "subscription": result.subscription,
            "dataset_id": result.dataset_id,
            # None on a resumed run whose key an earlier run already showed: rotate it to get a new one.
            "api_key": None if issued is None else issued.plaintext,
            "key": None if issued is None else issued.row,
            "api_key_already_issued": result.api_key_already_issued,
            "resumed": result.resumed,
            "performed": result.performed,
            "skipped": result.skipped,
        }
        return Response(self.OutputSerializer(output).data, status=status.HTTP_201_CREATED)


class TenantOnboardDryRunApi(APIView):
    class OutputSerializer(serializers.Serializer):
        valid = serializers.BooleanField()

    @extend_schema(request=OnboardInputSerializer, responses=OutputSerializer, examples=[ONBOARD_EXAMPLE])
    def post(self, request: Request) -> Response:
        data = OnboardInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        tenant_onboard_validate(created_by=f"user:{request.user.get_username()}", **data.validated_data)
        return Response({"valid": True})
