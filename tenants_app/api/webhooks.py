"""Webhook endpoints of one tenant: the signing secret is in the creation's answer only."""

from __future__ import annotations

from dataclasses import replace

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from tenants_app.api.idempotency import idempotent
from tenants_app.api.paging import PageFilterSerializer, page_response, page_serializer
from tenants_app.api.scoping import TenantScopedApi
from tenants_app.api.timestamps import TimestampField
from tenants_app.models import WebhookDeliveryStatus
from tenants_app.services.notifications import EVENT_TYPES
from tenants_app.services.webhooks import (
    MAX_PAGE_SIZE,
    webhook_delivery_data,
    webhook_delivery_page,
    webhook_endpoint_create,
    webhook_endpoint_delete,
    webhook_endpoint_get,
    webhook_endpoint_list,
    webhook_endpoint_metadata,
    webhook_endpoint_send_test,
)

# Endpoints hold a signing secret: managed with the scope that manages the tenant's other secrets.
WRITE_SCOPE = "credentials:manage"


class EndpointOutputSerializer(serializers.Serializer):
    endpoint_id = serializers.CharField()
    tenant_id = serializers.CharField()
    url = serializers.CharField()
    description = serializers.CharField(allow_null=True)
    event_types = serializers.ListField(child=serializers.CharField(), help_text="Empty: every event")
    secret_prefix = serializers.CharField(help_text="Tells secrets apart; the secret itself is never shown")
    is_active = serializers.BooleanField()
    created_at = TimestampField()
    created_by = serializers.CharField(allow_null=True)


class CreatedEndpointOutputSerializer(serializers.Serializer):
    secret = serializers.CharField(help_text="The signing secret: shown in this response only, store it now.")
    endpoint = EndpointOutputSerializer()


class DeliveryOutputSerializer(serializers.Serializer):
    delivery_id = serializers.CharField()
    endpoint_id = serializers.CharField()
    event_id = serializers.CharField()
    event_type = serializers.CharField()
    status = serializers.ChoiceField(choices=WebhookDeliveryStatus.choices)
    attempts = serializers.IntegerField()
    response_status = serializers.IntegerField(allow_null=True)
    last_error = serializers.CharField(allow_null=True)
    next_attempt_at = TimestampField(allow_null=True)
    last_attempt_at = TimestampField(allow_null=True)
    delivered_at = TimestampField(allow_null=True)
    created_at = TimestampField()


def _shown(row: object) -> dict[str, object]:
    return EndpointOutputSerializer(webhook_endpoint_metadata(row)).data  # type: ignore[arg-type]


class WebhookEndpointListApi(TenantScopedApi):
    write_scope = WRITE_SCOPE

    class InputSerializer(serializers.Serializer):
        url = serializers.CharField(max_length=4096, help_text="https://, resolving to public addresses only")
        event_types = serializers.ListField(
            child=serializers.ChoiceField(choices=EVENT_TYPES),
            required=False,
            help_text="Default: every event",
        )
        description = serializers.CharField(max_length=200, required=False, allow_blank=True)

    @extend_schema(
        summary="List webhook endpoints",
        parameters=[PageFilterSerializer],
        responses=page_serializer(EndpointOutputSerializer),
    )
    def get(self, request: Request, tenant_id: str | None = None) -> Response:
        filters = PageFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        # Only what webhook_endpoint_metadata lets out reaches the serializer: never the secret.
        rows = [webhook_endpoint_metadata(row) for row in webhook_endpoint_list(tenant_id=self.tenant_id())]
        return page_response(filters.page_of(rows), EndpointOutputSerializer)

    @extend_schema(
        summary="Create a webhook endpoint",
        request=InputSerializer,
        responses={201: CreatedEndpointOutputSerializer},
        examples=[
            OpenApiExample(
                "Failed runs only",
                value={"url": "https://hooks.example.com/convergence", "event_types": ["run.failed"]},
                request_only=True,
            )
        ],
    )
    @idempotent
    def post(self, request: Request, tenant_id: str | None = None) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        created = webhook_endpoint_create(
            tenant_id=self.tenant_id(), created_by=self.actor(request), **data.validated_data
        )
        body = {"secret": created.secret, "endpoint": webhook_endpoint_metadata(created.endpoint)}
        response = Response(CreatedEndpointOutputSerializer(body).data, status=status.HTTP_201_CREATED)
        response["Cache-Control"] = "no-store"
        return response


class WebhookEndpointDetailApi(TenantScopedApi):
    write_scope = WRITE_SCOPE

    @extend_schema(summary="Get a webhook endpoint", responses=EndpointOutputSerializer)
    def get(self, request: Request, endpoint_id: str, tenant_id: str | None = None) -> Response:
        return Response(_shown(webhook_endpoint_get(tenant_id=self.tenant_id(), endpoint_id=endpoint_id)))

    @extend_schema(summary="Delete a webhook endpoint", responses=EndpointOutputSerializer)
    def delete(self, request: Request, endpoint_id: str, tenant_id: str | None = None) -> Response:
        row = webhook_endpoint_delete(
            tenant_id=self.tenant_id(), endpoint_id=endpoint_id, deleted_by=self.actor(request)
        )
        return Response(_shown(row))


class WebhookEndpointTestApi(TenantScopedApi):
    write_scope = WRITE_SCOPE

    class OutputSerializer(serializers.Serializer):
        event_id = serializers.CharField(help_text="Delivered within seconds; see the endpoint's deliveries")

    @extend_schema(
        summary="Send a test event to an endpoint", request=None, responses={202: OutputSerializer}
    )
    def post(self, request: Request, endpoint_id: str, tenant_id: str | None = None) -> Response:
        event_id = webhook_endpoint_send_test(
            tenant_id=self.tenant_id(), endpoint_id=endpoint_id, actor=self.actor(request)
        )
        return Response({"event_id": event_id}, status=status.HTTP_202_ACCEPTED)


class WebhookDeliveryListApi(TenantScopedApi):
    write_scope = WRITE_SCOPE

    class FilterSerializer(PageFilterSerializer):
        max_page_size = MAX_PAGE_SIZE

    @extend_schema(
        summary="List an endpoint's deliveries",
        parameters=[FilterSerializer],
        responses=page_serializer(DeliveryOutputSerializer),
    )
    def get(self, request: Request, endpoint_id: str, tenant_id: str | None = None) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        page = webhook_delivery_page(
            tenant_id=self.tenant_id(), endpoint_id=endpoint_id, **filters.validated_data
        )
        shown = replace(page, items=[webhook_delivery_data(row) for row in page.items])
        return page_response(shown, DeliveryOutputSerializer)
