"""API keys of one tenant: list, issue (shown once), rotate with a grace period, revoke."""

from __future__ import annotations

from datetime import datetime

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response

from tenants_app.api.idempotency import idempotent
from tenants_app.api.paging import PageFilterSerializer, page_response, page_serializer
from tenants_app.api.scoping import TenantScopedApi
from tenants_app.api.timestamps import TimestampField
from tenants_app.services.api_key_rotation import ROTATION_GRACE_CHOICES, api_key_rotate
from tenants_app.services.api_key_scopes import API_KEY_SCOPES, DEFAULT_API_KEY_SCOPES
from tenants_app.services.api_key_verification import VerifiedApiKey
from tenants_app.services.api_keys import IssuedApiKey, api_key_create, api_key_list, api_key_revoke


class ApiKeyOutputSerializer(serializers.Serializer):
    """Key metadata: the prefix identifies a key; neither the key, its hash nor its ciphertext is shown."""

    api_key_id = serializers.CharField()
    name = serializers.CharField(allow_null=True)
    key_prefix = serializers.CharField(allow_null=True)
    scopes = serializers.ListField(child=serializers.CharField())
    is_active = serializers.BooleanField()
    expires_at = TimestampField(allow_null=True)
    created_at = TimestampField()
    created_by = serializers.CharField(allow_null=True)
    last_used_at = TimestampField(allow_null=True)
    revoked_at = TimestampField(allow_null=True)
    revoked_reason = serializers.CharField(allow_null=True)
    replaced_by_key_id = serializers.CharField(allow_null=True)


class IssuedApiKeyOutputSerializer(serializers.Serializer):
    api_key = serializers.CharField(help_text="The key itself: shown in this response only, store it now.")
    key = ApiKeyOutputSerializer()


def creator_expiry(request: Request) -> datetime | None:
    """The calling tenant key's own expiry, which bounds the keys it issues; None for staff."""
    verified = request.auth
    return verified.expires_at if isinstance(verified, VerifiedApiKey) else None


def issued_response(issued: IssuedApiKey) -> Response:
    data = IssuedApiKeyOutputSerializer({"api_key": issued.plaintext, "key": issued.row}).data
    return Response(data, status=status.HTTP_201_CREATED)


class ApiKeyListApi(TenantScopedApi):
    write_scope = "keys:manage"

    class FilterSerializer(PageFilterSerializer):
        include_revoked = serializers.BooleanField(default=False)

    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=100)
        scopes = serializers.ListField(
            child=serializers.ChoiceField(choices=API_KEY_SCOPES),
            required=False,
            help_text=f"Default: the read-only {', '.join(DEFAULT_API_KEY_SCOPES)}; for a tenant key, only "
            "those it holds.",
        )
        expires_at = TimestampField(
            required=False,
            allow_null=True,
            default=None,
            help_text="Default: never; for a tenant key, its own expiry, which is also the latest allowed.",
        )

    @extend_schema(
        summary="List API keys",
        parameters=[FilterSerializer],
        responses=page_serializer(ApiKeyOutputSerializer),
    )
    def get(self, request: Request, tenant_id: str | None = None) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        return page_response(
            api_key_list(tenant_id=self.tenant_id(), **filters.validated_data), ApiKeyOutputSerializer
        )

    @extend_schema(
        summary="Create an API key",
        request=InputSerializer,
        responses={201: IssuedApiKeyOutputSerializer},
        examples=[
            OpenApiExample(
                "A read-only key", value={"name": "dashboards", "scopes": ["tenant:read"]}, request_only=True
            )
        ],
    )
    @idempotent
    def post(self, request: Request, tenant_id: str | None = None) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        held = getattr(request.user, "scopes", None)
        if "scopes" not in values:
            values["scopes"] = [s for s in DEFAULT_API_KEY_SCOPES if held is None or s in held]
        if held is not None and not set(values["scopes"]) <= set(held):
            # A tenant key may hand out only what it holds: keys:manage is no way to pipelines:execute.
            missing = ", ".join(sorted(set(values["scopes"]) - set(held)))
            raise PermissionDenied(f"This API key cannot grant scopes it does not hold: {missing}.")
        issued = api_key_create(
            tenant_id=self.tenant_id(),
            created_by=self.actor(request),
            max_expires_at=creator_expiry(request),
            **values,
        )
        return issued_response(issued)


class ApiKeyRotateApi(TenantScopedApi):
    write_scope = "keys:manage"

    class InputSerializer(serializers.Serializer):
        grace = serializers.ChoiceField(
            choices=list(ROTATION_GRACE_CHOICES),
            help_text=f"How long the old key keeps working: {', '.join(ROTATION_GRACE_CHOICES)}.",
        )

    @extend_schema(
        summary="Rotate an API key",
        request=InputSerializer,
        responses={201: IssuedApiKeyOutputSerializer},
        examples=[OpenApiExample("An hour's grace", value={"grace": "1h"}, request_only=True)],
    )
    @idempotent
    def post(self, request: Request, api_key_id: str, tenant_id: str | None = None) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        issued = api_key_rotate(
            tenant_id=self.tenant_id(),
            api_key_id=api_key_id,
            grace=ROTATION_GRACE_CHOICES[data.validated_data["grace"]],
            rotated_by=self.actor(request),
            grantable_scopes=getattr(request.user, "scopes", None),
            max_expires_at=creator_expiry(request),
        )
        return issued_response(issued)


class ApiKeyRevokeApi(TenantScopedApi):
    write_scope = "keys:manage"

    class InputSerializer(serializers.Serializer):
        reason = serializers.CharField(max_length=500)

    @extend_schema(
        summary="Revoke an API key",
        request=InputSerializer,
        responses=ApiKeyOutputSerializer,
        examples=[
            OpenApiExample("A leaked key", value={"reason": "Pasted into a ticket"}, request_only=True)
        ],
    )
    def post(self, request: Request, api_key_id: str, tenant_id: str | None = None) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        row = api_key_revoke(
            tenant_id=self.tenant_id(),
            api_key_id=api_key_id,
            reason=data.validated_data["reason"],
            revoked_by=self.actor(request),
        )
        return Response(ApiKeyOutputSerializer(row).data)
