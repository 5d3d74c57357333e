"""Onboarding over the API: a dry run that reports each check, and the real thing (idempotent, resumable)."""

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
from tenants_app.services.actors import staff_actor
from tenants_app.services.onboarding import tenant_onboard, tenant_onboard_dryrun
from tenants_app.services.onboarding_checks import DEFAULT_PLAN, ONBOARDING_CHECKS, PLAN_ALIAS, PLAN_FIELD
from tenants_app.services.plans import PLANS

# Longer than any plan's name; the catalogue itself is the service's (an unknown name is refused or,
# in a dry run, reported by plan_valid).
PLAN_NAME_MAX_LENGTH = 50


class OnboardInputSerializer(serializers.Serializer):
    """Only shapes here: the service owns the rules (patterns, reserved names, plan catalogue, alias)."""

    tenant_id = serializers.CharField(max_length=50)
    # Their lengths, blanks and address syntax are services/profile_fields.py's; API_MAX_BODY_BYTES caps
    # the size.
    company_name = serializers.CharField(allow_blank=True, trim_whitespace=False)
    admin_email = serializers.CharField(allow_blank=True, trim_whitespace=False)
    plan = serializers.CharField(
        max_length=PLAN_NAME_MAX_LENGTH,
        required=False,
        help_text=(
            f"The subscription plan: one of {', '.join(PLANS)}. "
            f"{DEFAULT_PLAN} when neither this nor `{PLAN_ALIAS}` is given."
        ),
    )
    subscription_plan = serializers.CharField(
        max_length=PLAN_NAME_MAX_LENGTH,
        required=False,
        help_text=(
            f"Alias of `{PLAN_FIELD}`, the original system's name for it. Give either; both only with "
            f"the same value (else a 400 naming both). Errors about the plan name the field you used."
        ),
    )


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
        summary="Onboard a tenant",
        request=OnboardInputSerializer,
        responses={201: OutputSerializer},
        parameters=[OpenApiParameter(HEADER, str, OpenApiParameter.HEADER, required=False)],
        examples=[ONBOARD_EXAMPLE],
    )
    @idempotent
    def post(self, request: Request) -> Response:
        data = OnboardInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        result = tenant_onboard(created_by=staff_actor(request.user.get_username()), **data.validated_data)
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


class OnboardingCheckSerializer(serializers.Serializer):
    name = serializers.ChoiceField(choices=ONBOARDING_CHECKS)
    ok = serializers.BooleanField()
    detail = serializers.CharField(help_text="What was found; for a failed check, what to do about it.")


class TenantOnboardDryRunApi(APIView):
    """Every check an onboarding makes before it writes, with its verdict; nothing is written.

    A report answers 200 even when a check failed (a taken id, an unknown plan, KMS down): the
    request itself was fine and the report is the answer, as in the original system, whose
    integrations read `ok` and the checks. Malformed input is a 400 naming the field.
    """

    class OutputSerializer(serializers.Serializer):
        tenant_id = serializers.CharField()
        plan = serializers.CharField(help_text="The plan the onboarding would use (given or default).")
        ok = serializers.BooleanField(help_text="Whether every check passed.")
        valid = serializers.BooleanField(help_text="Same as `ok`, for callers of the earlier answer.")
        checks = OnboardingCheckSerializer(
            many=True, help_text=f"One per check, in this order: {', '.join(ONBOARDING_CHECKS)}."
        )

    @extend_schema(
        summary="Check an onboarding without writing",
        request=OnboardInputSerializer,
        responses=OutputSerializer,
        examples=[ONBOARD_EXAMPLE],
    )
    def post(self, request: Request) -> Response:
        data = OnboardInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        report = tenant_onboard_dryrun(
            created_by=staff_actor(request.user.get_username()), **data.validated_data
        )
        output = {
            "tenant_id": report.tenant_id,
            "plan": report.plan,
            "ok": report.ok,
            "valid": report.ok,
            "checks": report.checks,
        }
        return Response(self.OutputSerializer(output).data)
