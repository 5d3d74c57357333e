"""Portal pages of a tenant's cloud credentials: add, replace and deactivate; payloads are write-only.

Add and replace use the provider-shaped form (credential_forms.py); the service gets the payload dict
an API caller would send.
"""

from __future__ import annotations

from django import forms
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.html import format_html

from tenants_app.labels import enum_label
from tenants_app.models import TenantCloudCredential
from tenants_app.portal.credential_forms import CredentialForm
from tenants_app.portal.pages import (
    actor_of,
    back_to_tenant,
    bound_form,
    form_page,
    isolated,
    render_page,
    submit_form,
    writer_required,
)
from tenants_app.services.credentials import (
    credential_create,
    credential_deactivate,
    credential_get,
    credential_replace,
)
from tenants_app.services.tenants import (
    tenant_get,
)


# --- cloud credentials ------------------------------------------------------------------------------
def _credential_page(
    request: HttpRequest, *, tenant_id: str, title: str, form: CredentialForm, submit: str, intro: str = ""
) -> TemplateResponse:
    return render_page(
        request,
        "portal/credential_form.html",
        # A refused input is a 400 whose page names each field and why.
        status=400 if form.errors else 200,
        tenant_id=tenant_id,
        title=title,
        form=form,
        submit=submit,
        intro=intro,
    )


@writer_required
def tenant_credential_create_view(request: HttpRequest, tenant_id: str) -> HttpResponse:
    """Add a cloud credential; the payload is encrypted and never shown again."""
    tenant_get(tenant_id=tenant_id)
    form = bound_form(request, CredentialForm)
    return submit_form(
        request,
        form,
        action=lambda: credential_create(
            tenant_id=tenant_id,
            provider=form.provider(),
            name=form.cleaned_data["name"],
            payload=form.payload(),
            created_by=actor_of(request),
        ),
        on_success=lambda row: back_to_tenant(
            request,
            tenant_id,
            format_html(
                "Credential {} ({}, {}) was added.",
                isolated(row.credential_name),
                enum_label(row.provider),
                row.fingerprint,
            ),
        ),
        show_form=lambda: _credential_page(
            request,
            tenant_id=tenant_id,
            title=f"Add a cloud credential to {tenant_id}",
            form=form,
            submit="Add",
        ),
    )


def _credential(tenant_id: str, credential_id: str) -> TenantCloudCredential:
    row = credential_get(tenant_id=tenant_id, credential_id=credential_id)
    row.encrypted_credentials = b""
    return row


@writer_required
def tenant_credential_replace_view(request: HttpRequest, tenant_id: str, credential_id: str) -> HttpResponse:
    """Replace a credential's payload (same provider); a new fingerprint results."""
    row = _credential(tenant_id, credential_id)
    form = bound_form(request, CredentialForm, providers=(row.provider,), with_name=False)
    return submit_form(
        request,
        form,
        action=lambda: credential_replace(
            tenant_id=tenant_id,
            credential_id=credential_id,
            payload=form.payload(),
            updated_by=actor_of(request),
        ),
        on_success=lambda updated: back_to_tenant(
            request,
            tenant_id,
            format_html(
                "Credential {} was replaced (fingerprint {}).",
                isolated(updated.credential_name),
                updated.fingerprint,
            ),
        ),
        show_form=lambda: _credential_page(
            request,
            tenant_id=tenant_id,
            title=format_html(
                "Replace credential {} ({})", isolated(row.credential_name), enum_label(row.provider)
            ),
            form=form,
            submit="Replace",
            intro=f"Current fingerprint: {row.fingerprint}. The new payload is for the same provider.",
        ),
    )


@writer_required
def tenant_credential_deactivate_view(
    request: HttpRequest, tenant_id: str, credential_id: str
) -> HttpResponse:
    """Deactivate a credential: kept for the record, no longer usable."""
    row = _credential(tenant_id, credential_id)
    form = bound_form(request, forms.Form)
    return submit_form(
        request,
        form,
        action=lambda: credential_deactivate(
            tenant_id=tenant_id, credential_id=credential_id, updated_by=actor_of(request)
        ),
        on_success=lambda _: back_to_tenant(
            request,
            tenant_id,
            format_html(
                "Credential {} ({}) was deactivated.", isolated(row.credential_name), enum_label(row.provider)
            ),
        ),
        show_form=lambda: form_page(
            request,
            tenant_id=tenant_id,
            title=format_html(
                "Deactivate credential {} ({})?", isolated(row.credential_name), enum_label(row.provider)
            ),
            form=form,
            submit="Deactivate",
            intro="Pipelines can no longer use it; it stays listed as inactive. Add a new one to restore "
            "access.",
            danger=True,
        ),
    )
