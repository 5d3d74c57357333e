"""Portal pages of a tenant's cloud credentials: add, replace and deactivate; payloads are write-only."""

from __future__ import annotations

from django import forms
from django.http import HttpRequest, HttpResponse

from tenants_app.models import TenantCloudCredential
from tenants_app.portal import forms as portal_forms
from tenants_app.portal.pages import (
    actor_of,
    apply_form,
    back_to_tenant,
    form_page,
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
@writer_required
def tenant_credential_create_view(request: HttpRequest, tenant_id: str) -> HttpResponse:
    """Add a cloud credential; the payload is encrypted and never shown again."""
    tenant_get(tenant_id=tenant_id)
    form = portal_forms.CredentialCreateForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        response = apply_form(
            form,
            lambda: credential_create(tenant_id=tenant_id, created_by=actor_of(request), **form.cleaned_data),
            lambda row: back_to_tenant(
                request,
                tenant_id,
                f"Credential {row.credential_name} ({row.provider}, {row.fingerprint}) was added.",
            ),
            fallback_field="payload",
        )
        if response is not None:
            return response
    return form_page(
        request, tenant_id=tenant_id, title=f"Add a cloud credential to {tenant_id}", form=form, submit="Add"
    )


def _credential(tenant_id: str, credential_id: str) -> TenantCloudCredential:
    row = credential_get(tenant_id=tenant_id, credential_id=credential_id)
    row.encrypted_credentials = b""
    return row


@writer_required
def tenant_credential_replace_view(request: HttpRequest, tenant_id: str, credential_id: str) -> HttpResponse:
    """Replace a credential's payload (same provider); a new fingerprint results."""
    row = _credential(tenant_id, credential_id)
    form = portal_forms.CredentialReplaceForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        response = apply_form(
            form,
            lambda: credential_replace(
                tenant_id=tenant_id,
                credential_id=credential_id,
                payload=form.cleaned_data["payload"],
                updated_by=actor_of(request),
            ),
            lambda updated: back_to_tenant(
                request,
                tenant_id,
                f"Credential {updated.credential_name} was replaced (fingerprint {updated.fingerprint}).",
            ),
            fallback_field="payload",
        )
        if response is not None:
            return response
    return form_page(
        request,
        tenant_id=tenant_id,
        title=f"Replace credential {row.credential_name} ({row.provider})",
        form=form,
        submit="Replace",
        intro=f"Current fingerprint: {row.fingerprint}.",
    )


@writer_required
def tenant_credential_deactivate_view(
    request: HttpRequest, tenant_id: str, credential_id: str
) -> HttpResponse:
    """Deactivate a credential: kept for the record, no longer usable."""
    row = _credential(tenant_id, credential_id)
    form = forms.Form(request.POST if request.method == "POST" else None)
    if request.method == "POST":
        response = apply_form(
            form,
            lambda: credential_deactivate(
                tenant_id=tenant_id, credential_id=credential_id, updated_by=actor_of(request)
            ),
            lambda _: back_to_tenant(
                request, tenant_id, f"Credential {row.credential_name} ({row.provider}) was deactivated."
            ),
        )
        if response is not None:
            return response
    return form_page(
        request,
        tenant_id=tenant_id,
        title=f"Deactivate credential {row.credential_name} ({row.provider})?",
        form=form,
        submit="Deactivate",
        intro="Pipelines can no longer use it; it stays listed as inactive. Add a new one to restore access.",
        danger=True,
    )
