"""Portal pages of a tenant's API keys: issue, rotate and revoke; a new key is shown once."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.html import format_html

from tenants_app.models import TenantApiKey
from tenants_app.portal import forms as portal_forms
from tenants_app.portal.pages import (
    actor_of,
    back_to_tenant,
    bound_form,
    detail_url,
    form_page,
    isolated,
    issue_token,
    issued_page,
    resubmitted,
    submit_form,
    writer_required,
)
from tenants_app.services.api_key_rotation import ROTATION_GRACE_CHOICES, api_key_rotate, rotated_key_name
from tenants_app.services.api_keys import api_key_create, api_key_revoke, tenant_key_row
from tenants_app.services.tenants import (
    tenant_get,
)


# --- API keys ---------------------------------------------------------------------------------------
@writer_required
def tenant_key_create_view(request: HttpRequest, tenant_id: str) -> HttpResponse:
    """Issue a key; the result page shows its plaintext once."""
    tenant_get(tenant_id=tenant_id)
    form = bound_form(request, portal_forms.ApiKeyCreateForm)
    return submit_form(
        request,
        form,
        before=lambda: resubmitted(
            request,
            message="This key request was already submitted; a key is shown only once.",
            url=detail_url(tenant_id),
        ),
        action=lambda: api_key_create(tenant_id=tenant_id, created_by=actor_of(request), **form.cleaned_data),
        on_success=lambda issued: issued_page(
            request,
            tenant_id=tenant_id,
            issued=issued,
            message=f"API key {issued.row.key_prefix}… was created for {tenant_id}.",
            title=f"New API key for {tenant_id}",
            note="Copy the key now and hand it over securely: it is shown only once.",
        ),
        show_form=lambda: form_page(
            request,
            tenant_id=tenant_id,
            title=f"New API key for {tenant_id}",
            form=form,
            submit="Create key",
            extra={"token": issue_token(request)},
        ),
    )


def _key(tenant_id: str, api_key_id: str) -> TenantApiKey:
    row = tenant_key_row(tenant_id, api_key_id)  # one row, without its ciphertext
    row.api_key_hash = ""
    return row


@writer_required
def tenant_key_rotate_view(request: HttpRequest, tenant_id: str, api_key_id: str) -> HttpResponse:
    """Issue a replacement named after the key, with its scopes; the old key works for the grace period."""
    key = _key(tenant_id, api_key_id)
    form = bound_form(request, portal_forms.ApiKeyRotateForm)
    return submit_form(
        request,
        form,
        before=lambda: resubmitted(
            request,
            message="This rotation was already submitted; a key is shown only once.",
            url=detail_url(tenant_id),
        ),
        action=lambda: api_key_rotate(
            tenant_id=tenant_id,
            api_key_id=api_key_id,
            grace=ROTATION_GRACE_CHOICES[form.cleaned_data["grace"]],
            rotated_by=actor_of(request),
        ),
        on_success=lambda issued: issued_page(
            request,
            tenant_id=tenant_id,
            issued=issued,
            message=f"API key {key.key_prefix}… was rotated to {issued.row.key_prefix}….",
            title=format_html("Replacement for API key {}", isolated(key.name or key.api_key_id)),
            note="Copy the new key now: it is shown only once. The old key works until the grace "
            "period ends.",
        ),
        show_form=lambda: form_page(
            request,
            tenant_id=tenant_id,
            title=format_html(
                "Rotate API key {}… ({})", key.key_prefix, isolated(key.name or key.api_key_id)
            ),
            form=form,
            submit="Rotate",
            intro=format_html(
                "A new key named “{}”, with the same scopes and expiry, is issued and shown once.",
                isolated(rotated_key_name(name=key.name, rotated_at=timezone.now())),
            ),
            extra={"token": issue_token(request)},
        ),
    )


@writer_required
def tenant_key_revoke_view(request: HttpRequest, tenant_id: str, api_key_id: str) -> HttpResponse:
    """Revoke a key for good, with a reason."""
    key = _key(tenant_id, api_key_id)
    form = bound_form(request, portal_forms.ApiKeyRevokeForm)
    return submit_form(
        request,
        form,
        action=lambda: api_key_revoke(
            tenant_id=tenant_id,
            api_key_id=api_key_id,
            reason=form.cleaned_data["reason"],
            revoked_by=actor_of(request),
        ),
        on_success=lambda _: back_to_tenant(request, tenant_id, f"API key {key.key_prefix}… was revoked."),
        show_form=lambda: form_page(
            request,
            tenant_id=tenant_id,
            title=format_html(
                "Revoke API key {}… ({})?", key.key_prefix, isolated(key.name or key.api_key_id)
            ),
            form=form,
            submit="Revoke",
            intro="The key stops working at once in this process (within the key cache's bound elsewhere). "
            "This cannot be undone.",
            danger=True,
        ),
    )
