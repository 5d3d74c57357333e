"""Portal pages of a tenant's webhook endpoints: the list, create (the signing secret shown once), an
endpoint's page with its delivery log, "send test event" and delete. Thin: services/webhooks.py decides,
checks the URL and writes the audit entries; read-only staff get a 403 on every operation."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from tenants_app.portal.forms import add_service_errors
from tenants_app.portal.pages import (
    actor_of,
    can_change,
    isolated,
    issue_token,
    no_store,
    portal_page,
    spend_token,
    writer_required,
)
from tenants_app.portal.pipeline_forms import ConfirmForm
from tenants_app.portal.webhook_forms import DELIVERIES_PER_PAGE, DeliveryPageForm, WebhookCreateForm
from tenants_app.services.errors import DoesNotExist, ServiceError
from tenants_app.services.tenants import tenant_get
from tenants_app.services.webhooks import (
    CreatedEndpoint,
    webhook_delivery_page,
    webhook_endpoint_create,
    webhook_endpoint_delete,
    webhook_endpoint_get,
    webhook_endpoint_list,
    webhook_endpoint_send_test,
)


def endpoint_url(tenant_id: str, endpoint_id: str) -> str:
    return reverse("admin:portal-webhook-detail", args=[tenant_id, endpoint_id])


def _list_url(tenant_id: str) -> str:
    return reverse("admin:portal-tenant-webhooks", args=[tenant_id])


def _render(request: HttpRequest, template: str, *, status: int = 200, **extra: Any) -> TemplateResponse:
    context = {**admin.site.each_context(request), "can_change": can_change(request), **extra}
    return TemplateResponse(request, template, context, status=status)


def _form_page(request: HttpRequest, *, form: forms.Form, status: int = 200, **extra: Any) -> HttpResponse:
    if form.errors and status < 400:
        status = 400  # the page names each field and why
    return _render(request, "portal/tenant_form.html", status=status, form=form, **extra)


def _refusal(form: forms.Form, exc: ServiceError) -> int:
    """Put a refusal the user can act on onto the form and give its status; re-raise the rest."""
    if exc.status >= 500 or isinstance(exc, DoesNotExist):
        raise exc  # portal_page shows its own page (404, 503 with Retry-After)
    add_service_errors(form, exc)
    return exc.status


# --- the tenant's endpoints ---------------------------------------------------------------------------
@portal_page
def webhook_list_view(request: HttpRequest, tenant_id: str) -> HttpResponse:
    tenant_get(tenant_id=tenant_id)
    return _render(
        request,
        "portal/webhook_list.html",
        title=f"Webhook endpoints of {tenant_id}",
        tenant_id=tenant_id,
        webhooks=webhook_endpoint_list(tenant_id=tenant_id),
    )


@writer_required
def webhook_create_view(request: HttpRequest, tenant_id: str) -> HttpResponse:
    """Create an endpoint; the result page shows its signing secret once (no-store)."""
    tenant_get(tenant_id=tenant_id)
    form = WebhookCreateForm(request.POST if request.method == "POST" else None)
    status = 200
    if request.method == "POST" and form.is_valid():
        # A reload of the result page re-posts the form: its token is spent, so no second endpoint.
        if not spend_token(request, request.POST.get("token", "")):
            messages.warning(request, "This endpoint was already created; its secret is shown only once.")
            return HttpResponseRedirect(_list_url(tenant_id))
        try:
            created = webhook_endpoint_create(
                tenant_id=tenant_id, created_by=actor_of(request), **form.cleaned_data
            )
        except ServiceError as exc:
            status = _refusal(form, exc)
        else:
            return _secret_page(request, tenant_id=tenant_id, created=created)
    return _form_page(
        request,
        form=form,
        status=status,
        tenant_id=tenant_id,
        title=f"New webhook endpoint for {tenant_id}",
        submit="Create endpoint",
        intro="The next page shows the endpoint's signing secret once: the receiver checks each "
        "delivery's signature with it.",
        token=issue_token(request),
    )


def _secret_page(request: HttpRequest, *, tenant_id: str, created: CreatedEndpoint) -> HttpResponse:
    messages.success(request, f"Webhook endpoint {created.endpoint.endpoint_id} was created.")
    response = _render(
        request,
        "portal/webhook_secret_issued.html",
        title=f"New webhook endpoint for {tenant_id}",
        tenant_id=tenant_id,
        endpoint=created.endpoint,
        secret=created.secret,
    )
    return no_store(response)


# --- one endpoint -------------------------------------------------------------------------------------
@portal_page
def webhook_detail_view(request: HttpRequest, tenant_id: str, endpoint_id: str) -> HttpResponse:
    """The endpoint and its delivery log, latest first, a page at a time (`?page=`)."""
    endpoint = webhook_endpoint_get(tenant_id=tenant_id, endpoint_id=endpoint_id)
    paging = DeliveryPageForm(request.GET)
    if not paging.is_valid():
        return _render(
            request,
            "portal/webhook_detail.html",
            status=400,
            title=f"Webhook endpoint {endpoint_id}",
            tenant_id=tenant_id,
            endpoint=endpoint,
            paging=paging,
        )
    deliveries = webhook_delivery_page(
        tenant_id=tenant_id, endpoint_id=endpoint_id, limit=DELIVERIES_PER_PAGE, offset=paging.offset()
    )
    return _render(
        request,
        "portal/webhook_detail.html",
        title=f"Webhook endpoint {endpoint_id}",
        tenant_id=tenant_id,
        endpoint=endpoint,
        deliveries=deliveries,
        **_page_links(request, deliveries.offset, deliveries.total),
    )


def _page_links(request: HttpRequest, offset: int, total: int) -> dict[str, Any]:
    number = offset // DELIVERIES_PER_PAGE + 1
    pages = max(1, -(-total // DELIVERIES_PER_PAGE))

    def link(page: int) -> str | None:
        return f"{request.path}?{urlencode({'page': page})}" if 1 <= page <= pages else None

    return {
        "page_number": number,
        "page_count": pages,
        "previous_page": link(number - 1),
        "next_page": link(number + 1),
    }


@writer_required
def webhook_test_view(request: HttpRequest, tenant_id: str, endpoint_id: str) -> HttpResponse:
    """The endpoint page's "Send test event" button (POST only): queues a `webhook.test` delivery."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    event_id = webhook_endpoint_send_test(
        tenant_id=tenant_id, endpoint_id=endpoint_id, actor=actor_of(request)
    )
    messages.success(request, f"Test event {event_id} was queued; its delivery shows below within seconds.")
    return HttpResponseRedirect(endpoint_url(tenant_id, endpoint_id))


@writer_required
def webhook_delete_view(request: HttpRequest, tenant_id: str, endpoint_id: str) -> HttpResponse:
    """A confirmation page; its button deletes (the delivery log stays)."""
    endpoint = webhook_endpoint_get(tenant_id=tenant_id, endpoint_id=endpoint_id)
    form = ConfirmForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        webhook_endpoint_delete(tenant_id=tenant_id, endpoint_id=endpoint_id, deleted_by=actor_of(request))
        messages.success(
            request, format_html("Webhook endpoint {} ({}) was deleted.", endpoint_id, isolated(endpoint.url))
        )
        return HttpResponseRedirect(reverse("admin:portal-tenant-detail", args=[tenant_id]))
    return _form_page(
        request,
        form=form,
        tenant_id=tenant_id,
        title=format_html("Delete webhook endpoint {}?", isolated(endpoint.url)),
        submit="Yes, delete",
        intro="Nothing more is sent to it, including deliveries still waiting for a retry. Its delivery "
        "log stays. This cannot be undone: create a new endpoint (with a new secret) instead.",
        danger=True,
    )
