"""Admin API over tenants: list, detail, edit, suspend, reactivate, offboard."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tenants_app.api.paging import PageFilterSerializer, page_response, page_serializer
from tenants_app.api.schema import error_response
from tenants_app.api.timestamps import TimestampField
from tenants_app.models import PlanName, TenantStatus
from tenants_app.services.actors import staff_actor
from tenants_app.services.tenants import (
    MAX_PAGE_SIZE,
    tenant_get,
    tenant_list,
    tenant_offboard,
    tenant_reactivate,
    tenant_suspend,
    tenant_update,
)


class TenantOutputSerializer(serializers.Serializer):
    tenant_id = serializers.CharField()
    company_name = serializers.CharField()
    admin_email = serializers.EmailField()
    tenant_dataset_id = serializers.CharField()
    status = serializers.ChoiceField(choices=TenantStatus.choices)
    subscription_plan = serializers.CharField(allow_null=True)
    created_at = TimestampField()
    updated_at = TimestampField(allow_null=True)


class TenantListApi(APIView):
    class FilterSerializer(PageFilterSerializer):
        max_page_size = MAX_PAGE_SIZE
        status = serializers.ChoiceField(choices=TenantStatus.choices, required=False)
        plan = serializers.ChoiceField(choices=PlanName.choices, required=False)
        search = serializers.CharField(required=False, max_length=200)

    @extend_schema(
        summary="List tenants",
        parameters=[FilterSerializer],
        responses=page_serializer(TenantOutputSerializer),
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        return page_response(tenant_list(**filters.validated_data), TenantOutputSerializer)


# `tenants/onboard` and `tenants/dryrun` are routes of their own (POST only), never tenant ids.
RESERVED_PATH_RESPONSE = error_response(
    "`onboard` and `dryrun` are not tenant ids: those paths take POST only."
)


class TenantDetailApi(APIView):
    class InputSerializer(serializers.Serializer):
        # Shapes only: services/profile_fields.py says what a name or an address may be, for the API,
        # the portal and onboarding alike (a blank one, too). API_MAX_BODY_BYTES caps the size.
        company_name = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
        admin_email = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)

    @extend_schema(
        summary="Get a tenant", responses={200: TenantOutputSerializer, 405: RESERVED_PATH_RESPONSE}
    )
    def get(self, request: Request, tenant_id: str) -> Response:
        return Response(TenantOutputSerializer(tenant_get(tenant_id=tenant_id)).data)

    @extend_schema(
        summary="Change a tenant's company name or email",
        request=InputSerializer,
        responses={200: TenantOutputSerializer, 405: RESERVED_PATH_RESPONSE},
    )
    def patch(self, request: Request, tenant_id: str) -> Response:
        changes = self.InputSerializer(data=request.data)
        changes.is_valid(raise_exception=True)
        profile = tenant_update(tenant_id=tenant_id, actor=_staff_actor(request), **changes.validated_data)
        return Response(TenantOutputSerializer(profile).data)


class TenantSuspendApi(APIView):
    @extend_schema(summary="Suspend a tenant", request=None, responses=TenantOutputSerializer)
    def post(self, request: Request, tenant_id: str) -> Response:
        return Response(
            TenantOutputSerializer(tenant_suspend(tenant_id=tenant_id, actor=_staff_actor(request))).data
        )


class TenantReactivateApi(APIView):
    @extend_schema(summary="Reactivate a suspended tenant", request=None, responses=TenantOutputSerializer)
    def post(self, request: Request, tenant_id: str) -> Response:
        return Response(
            TenantOutputSerializer(tenant_reactivate(tenant_id=tenant_id, actor=_staff_actor(request))).data
        )


class TenantOffboardApi(APIView):
    class InputSerializer(serializers.Serializer):
        purge_dataset = serializers.BooleanField(default=False)
        confirm_tenant_id = serializers.CharField(
            help_text="Repeat the tenant id: offboarding revokes every key and cannot be undone here."
        )

    @extend_schema(summary="Offboard a tenant", request=InputSerializer, responses=TenantOutputSerializer)
    def post(self, request: Request, tenant_id: str) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        if data.validated_data["confirm_tenant_id"] != tenant_id:
            raise serializers.ValidationError({"confirm_tenant_id": ["Does not match the tenant id."]})
        profile = tenant_offboard(
            tenant_id=tenant_id,
            actor=_staff_actor(request),
            purge_dataset=data.validated_data["purge_dataset"],
        )
        return Response(TenantOutputSerializer(profile).data)


def _staff_actor(request: Request) -> str:
    """Who acts, for the audit log: these endpoints are for staff only."""
    return staff_actor(request.user.get_username())
