"""The pipeline template catalogue (`GET /api/v1/pipeline-templates`): what a config's
`pipeline_template` may name, each template's parameters and the providers of credentials it needs."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tenants_app.api.paging import PageFilterSerializer, page_response, page_serializer
from tenants_app.api.permissions import TenantKeyOrStaff
from tenants_app.pipeline_templates import template_list


class TemplateParameterOutputSerializer(serializers.Serializer):
    name = serializers.CharField()
    type = serializers.CharField(
        help_text="string, integer, boolean, table (of your dataset), choice, sql, object or expectations."
    )
    required = serializers.BooleanField()
    default = serializers.JSONField(allow_null=True)
    choices = serializers.ListField(child=serializers.CharField(), help_text="For type choice.")
    help = serializers.CharField()


class PipelineTemplateOutputSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="What a config's pipeline_template names.")
    title = serializers.CharField()
    description = serializers.CharField()
    parameters = TemplateParameterOutputSerializer(many=True)
    providers = serializers.ListField(
        child=serializers.CharField(),
        help_text="Providers whose cloud credentials a worker needs to run it on real BigQuery.",
    )
    exactly_one_of = serializers.ListField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text="Groups of parameters of which exactly one must be given.",
    )


class PipelineTemplateListApi(APIView):
    permission_classes = [TenantKeyOrStaff]
    schema_callers = frozenset({"TenantApiKey", "AdminToken", "cookieAuth"})

    @extend_schema(
        summary="List pipeline templates",
        parameters=[PageFilterSerializer],
        responses=page_serializer(PipelineTemplateOutputSerializer),
    )
    def get(self, request: Request) -> Response:
        filters = PageFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        return page_response(filters.page_of(template_list()), PipelineTemplateOutputSerializer)
