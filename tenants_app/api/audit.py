"""A tenant's audit trail over the API, newest first: to staff as recorded, to the tenant with staff masked.

Entries hold no secret by construction (services/audit.py). What a tenant key is shown differs only in
the actors (`actors.actors_masked`, applied by `TenantScopedApi` to every answer, the entries' before
and after values included).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from tenants_app.api.paging import PageFilterSerializer, page_response, page_serializer
from tenants_app.api.scoping import TenantScopedApi
from tenants_app.api.timestamps import TimestampField, timestamps_in_values
from tenants_app.models import AuditLogEntry
from tenants_app.services.audit import MAX_PAGE_SIZE, SOURCES, audit_entry_data, audit_list


class AuditEntryOutputSerializer(serializers.Serializer):
    audit_id = serializers.CharField()
    occurred_at = TimestampField()
    actor = serializers.CharField(
        help_text="user:<name> (staff; `staff` to a tenant key), apikey:<id> or system:<job>."
    )
    actor_type = serializers.CharField(help_text="staff, tenant_key or system.")
    source = serializers.CharField(help_text="portal, api or command.")
    action = serializers.CharField(help_text="What was done, e.g. api_key.rotate.")
    tenant_id = serializers.CharField(allow_null=True)
    target_type = serializers.CharField(allow_null=True)
    target_id = serializers.CharField(allow_null=True)
    before_values = serializers.JSONField(allow_null=True, help_text="The changed fields before.")
    after_values = serializers.JSONField(allow_null=True, help_text="The changed fields after.")
    request_id = serializers.CharField(allow_null=True, help_text="The X-Request-ID of the change.")


def audit_entry_shown(entry: AuditLogEntry) -> dict[str, Any]:
    """An entry as answers show it: the changed columns' instants written like every other instant."""
    data = audit_entry_data(entry)
    for name in ("before_values", "after_values"):
        data[name] = timestamps_in_values(data[name])
    return data


class AuditListApi(TenantScopedApi):
    class FilterSerializer(PageFilterSerializer):
        max_page_size = MAX_PAGE_SIZE
        action = serializers.CharField(required=False, max_length=64, help_text="e.g. api_key.create")
        source = serializers.ChoiceField(choices=SOURCES, required=False)
        since = TimestampField(required=False, help_text="At or after")
        until = TimestampField(required=False, help_text="Before")

    @extend_schema(
        summary="List audit entries",
        parameters=[FilterSerializer],
        responses=page_serializer(AuditEntryOutputSerializer),
    )
    def get(self, request: Request, tenant_id: str | None = None) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        page = audit_list(tenant_id=self.tenant_id(), **filters.validated_data)
        shown = replace(page, items=[audit_entry_shown(entry) for entry in page.items])
        return page_response(shown, AuditEntryOutputSerializer)
