"""Cloud credentials of one tenant: the payload goes in, only metadata ever comes out."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from tenants_app.api.idempotency import idempotent
from tenants_app.api.paging import PageFilterSerializer, page_response, page_serializer
from tenants_app.api.scoping import TenantScopedApi
from tenants_app.api.timestamps import TimestampField
from tenants_app.models import CredentialType, Provider, ValidationStatus
from tenants_app.services.credentials import (
    credential_create,
    credential_deactivate,
    credential_get,
    credential_list,
    credential_metadata,
    credential_replace,
)


class CredentialOutputSerializer(serializers.Serializer):
    credential_id = serializers.CharField()
    tenant_id = serializers.CharField()
    provider = serializers.ChoiceField(choices=Provider.choices)
    name = serializers.CharField(allow_null=True)
    type = serializers.ChoiceField(choices=CredentialType.choices, allow_null=True)
    fingerprint = serializers.CharField(allow_null=True)
    validation_status = serializers.ChoiceField(choices=ValidationStatus.choices, allow_null=True)
    is_active = serializers.BooleanField()
    created_at = TimestampField()
    created_by = serializers.CharField(allow_null=True)
    updated_at = TimestampField(allow_null=True)
    updated_by = serializers.CharField(allow_null=True)


def metadata(row: object) -> dict[str, object]:
    return CredentialOutputSerializer(credential_metadata(row)).data  # type: ignore[arg-type]


# An OpenAI key's shape with a placeholder value: what the docs show, and what the fuzzing sends.
PLACEHOLDER_OPENAI_PAYLOAD = {"api_key": "sk-proj-EXAMPLE-EXAMPLE-EXAMPLE-EXAMPLE"}


class CredentialListApi(TenantScopedApi):
    write_scope = "credentials:manage"

    class FilterSerializer(PageFilterSerializer):
        include_inactive = serializers.BooleanField(default=False)

    class InputSerializer(serializers.Serializer):
        provider = serializers.ChoiceField(choices=Provider.choices)
        name = serializers.CharField(max_length=100)
        payload = serializers.JSONField(help_text="The provider's credential document; never returned.")

    @extend_schema(
        summary="List cloud credentials",
        parameters=[FilterSerializer],
        responses=page_serializer(CredentialOutputSerializer),
    )
    def get(self, request: Request, tenant_id: str | None = None) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        rows = credential_list(tenant_id=self.tenant_id(), **filters.other_filters())
        # Only what credential_metadata lets out reaches the serializer: never the ciphertext.
        return page_response(
            filters.page_of([credential_metadata(row) for row in rows]), CredentialOutputSerializer
        )

    @extend_schema(
        summary="Add a cloud credential",
        request=InputSerializer,
        responses={201: CredentialOutputSerializer},
        examples=[
            OpenApiExample(
                "An OpenAI key",
                value={"provider": "OPENAI", "name": "analytics", "payload": PLACEHOLDER_OPENAI_PAYLOAD},
                request_only=True,
            )
        ],
    )
    @idempotent
    def post(self, request: Request, tenant_id: str | None = None) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        row = credential_create(
            tenant_id=self.tenant_id(), created_by=self.actor(request), **data.validated_data
        )
        return Response(metadata(row), status=status.HTTP_201_CREATED)


class CredentialDetailApi(TenantScopedApi):
    @extend_schema(summary="Get a cloud credential", responses=CredentialOutputSerializer)
    def get(self, request: Request, credential_id: str, tenant_id: str | None = None) -> Response:
        return Response(metadata(credential_get(tenant_id=self.tenant_id(), credential_id=credential_id)))


class CredentialReplaceApi(TenantScopedApi):
    write_scope = "credentials:manage"

    class InputSerializer(serializers.Serializer):
        payload = serializers.JSONField()

    @extend_schema(
        summary="Replace a credential's secret",
        request=InputSerializer,
        responses=CredentialOutputSerializer,
        examples=[
            OpenApiExample(
                "A new OpenAI key", value={"payload": PLACEHOLDER_OPENAI_PAYLOAD}, request_only=True
            )
        ],
    )
    def post(self, request: Request, credential_id: str, tenant_id: str | None = None) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        row = credential_replace(
            tenant_id=self.tenant_id(),
            credential_id=credential_id,
            payload=data.validated_data["payload"],
            updated_by=self.actor(request),
        )
        return Response(metadata(row))


class CredentialDeactivateApi(TenantScopedApi):
    write_scope = "credentials:manage"

    @extend_schema(
        summary="Deactivate a cloud credential", request=None, responses=CredentialOutputSerializer
    )
    def post(self, request: Request, credential_id: str, tenant_id: str | None = None) -> Response:
        row = credential_deactivate(
            tenant_id=self.tenant_id(), credential_id=credential_id, updated_by=self.actor(request)
        )
        return Response(metadata(row))
