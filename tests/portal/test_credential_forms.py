"""The provider-shaped credential forms: each provider's inputs make the payload the API takes; the
service's errors land on the input they are about, with its label; after an error the form keeps what
was typed except the secrets."""

# `onboard` comes from tests/portal/tenant_helpers.py by import, so test parameters shadow the import.
# ruff: noqa: F811

from __future__ import annotations

import json
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from tenants_app.models import TenantCloudCredential
from tenants_app.repositories import central_repository
from tenants_app.services.credential_payloads import MAX_PAYLOAD_BYTES
from tenants_app.services.credentials import credential_create, credential_decrypt
from tests.portal.tenant_helpers import Onboard, html, onboard, url  # noqa: F401 - a fixture
from tests.support.kms_fake import cloud_kms_in_use
from tests.support.payloads import aws_payload, gcp_payload

OPENAI_SECRET = "sk-" + "Pq9" * 12
ANTHROPIC_SECRET = "sk-ant-" + "Zx7" * 10
AZURE_SECRET = "Q8x~" + "aB3_" * 8
AWS_KEY_ID = "AKIAABCDEFGHIJKLMNOP"


def stored_payloads(tenant_id: str) -> list[dict[str, object]]:
    rows = central_repository(TenantCloudCredential).list(filters={"tenant_id": tenant_id})
    return [credential_decrypt(tenant_id=tenant_id, credential_id=row.credential_id) for row in rows]


def key_file(payload: object, name: str = "key.json") -> SimpleUploadedFile:
    content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return SimpleUploadedFile(name, content, content_type="application/json")


def input_value(page: str, name: str) -> str | None:
    """The value an <input name=...> renders with, or None when it renders none."""
    tag = re.search(rf'<input[^>]*name="{name}"[^>]*>', page)
    assert tag, f"no {name} input on the page"
    value = re.search(r'value="([^"]*)"', tag.group(0))
    return value.group(1) if value else None


def field_errors(response: object, field: str) -> list[str]:
    return list(response.context["form"].errors.get(field, []))  # type: ignore[attr-defined]


# --- each provider's payload ----------------------------------------------------------------------------
AZURE = {
    "tenant_id": "8f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f",
    "client_id": "1a2b3c4d-5e6f-4a8b-9c0d-1e2f3a4b5c6d",
    "client_secret": AZURE_SECRET,
    "subscription_id": "0f9e8d7c-6b5a-4c3d-2e1f-0a9b8c7d6e5f",
}


@pytest.mark.parametrize(
    ("provider", "payload"),
    [
        ("AWS", {"access_key_id": AWS_KEY_ID, "secret_access_key": "Ab1/" * 10, "region": "eu-west-1"}),
        ("AZURE", AZURE),
        ("OPENAI", {"api_key": OPENAI_SECRET}),
        ("ANTHROPIC", {"api_key": ANTHROPIC_SECRET}),
    ],
)
def test_it_stores_each_providers_typed_fields_as_the_payload_the_api_takes(
    superuser_client: Client, onboard: Onboard, provider: str, payload: dict[str, str]
) -> None:
    tenant_id = onboard().profile.tenant_id
    typed = {f"{provider.lower()}_{name}": value for name, value in payload.items()}
    # Another provider's inputs, filled in while undecided, are not read.
    typed["openai_api_key" if provider != "OPENAI" else "aws_region"] = "left over"

    added = superuser_client.post(
        url("tenant-credential-create", tenant_id), {"provider": provider, "name": "prod", **typed}
    )

    assert added.status_code == 302, field_errors(added, "__all__")
    assert stored_payloads(tenant_id) == [payload]


def test_it_stores_an_uploaded_gcp_key_file_whole(superuser_client: Client, onboard: Onboard) -> None:
    tenant_id = onboard().profile.tenant_id
    payload = gcp_payload()

    added = superuser_client.post(
        url("tenant-credential-create", tenant_id),
        {"provider": "GCP", "name": "warehouse", "gcp_key_file": key_file(payload)},
        follow=True,
    )

    assert added.status_code == 200
    assert stored_payloads(tenant_id) == [payload]
    assert payload["private_key"] not in html(added)
    assert any("GCP" in str(message) for message in added.context["messages"])


def test_it_takes_a_gcp_key_files_json_pasted_when_it_cannot_be_uploaded(
    superuser_client: Client, onboard: Onboard
) -> None:
    tenant_id = onboard().profile.tenant_id
    payload = gcp_payload()

    superuser_client.post(
        url("tenant-credential-create", tenant_id),
        {"provider": "GCP", "name": "warehouse", "gcp_key_json": json.dumps(payload, indent=2)},
    )

    assert stored_payloads(tenant_id) == [payload]


def test_it_shows_every_providers_fields_and_one_script_that_hides_the_others(
    superuser_client: Client, onboard: Onboard
) -> None:
    tenant_id = onboard().profile.tenant_id

    page = html(superuser_client.get(url("tenant-credential-create", tenant_id)))

    # Without JavaScript every fieldset shows (none hidden in the markup); the select decides which is read.
    fieldsets = re.findall(r"<fieldset[^>]*data-provider=\"([A-Z]+)\"[^>]*>", page)
    assert fieldsets == ["GCP", "AWS", "AZURE", "OPENAI", "ANTHROPIC"]
    assert " hidden" not in "".join(re.findall(r"<fieldset[^>]*>", page))
    assert 'type="file" name="gcp_key_file"' in page
    assert 'enctype="multipart/form-data"' in page
    assert re.search(r'<script src="[^"]*portal/credential_form\.js" defer>', page)
    assert "<script>" not in page


# --- errors name the field, keep what was typed, never the secret ---------------------------------------
def test_it_names_the_field_and_keeps_the_non_secret_input_but_not_the_secret(
    superuser_client: Client, onboard: Onboard
) -> None:
    tenant_id = onboard().profile.tenant_id
    bad_secret = "Xy9/" * 9  # 36 characters: not an AWS secret access key

    response = superuser_client.post(
        url("tenant-credential-create", tenant_id),
        {
            "provider": "AWS",
            "name": "billing",
            "aws_access_key_id": AWS_KEY_ID,
            "aws_secret_access_key": bad_secret,
            "aws_region": "eu-west-1",
        },
    )
    page = html(response)

    assert response.status_code == 400
    assert field_errors(response, "aws_secret_access_key") == [
        "Secret access key: Must be the 40-character secret access key (letters, digits, '/' and '+')."
    ]
    assert (input_value(page, "name"), input_value(page, "aws_access_key_id")) == ("billing", AWS_KEY_ID)
    assert input_value(page, "aws_region") == "eu-west-1"
    assert re.search(r'<option value="AWS"[^>]*selected', page)
    assert input_value(page, "aws_secret_access_key") is None
    assert bad_secret not in page
    assert "For your safety" in page
    assert not stored_payloads(tenant_id)


def test_it_names_the_payload_field_a_missing_value_belongs_to(
    superuser_client: Client, onboard: Onboard
) -> None:
    tenant_id = onboard().profile.tenant_id

    response = superuser_client.post(
        url("tenant-credential-create", tenant_id),
        {"provider": "AZURE", "name": "entra", "azure_tenant_id": AZURE["tenant_id"]},
    )

    assert response.status_code == 400
    assert field_errors(response, "azure_client_id") == ["Application (client) ID: This field is required."]
    assert field_errors(response, "azure_client_secret") == ["Client secret value: This field is required."]
    assert input_value(html(response), "azure_tenant_id") == AZURE["tenant_id"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({**gcp_payload(), "scopes": "x"}, "Service-account key file (JSON): scopes: Unknown field."),
        (
            {**gcp_payload(), "type": "authorized_user"},
            'Service-account key file (JSON): type: Must be "service_account"',
        ),
        (
            {k: v for k, v in gcp_payload().items() if k != "private_key"},
            "private_key: This field is required.",
        ),
        (b"-----BEGIN PRIVATE KEY-----\nnot json", "Service-account key file (JSON): Send a JSON object."),
        (b"x" * (MAX_PAYLOAD_BYTES + 1), "Service-account key file (JSON): at most 64 KiB"),
    ],
    ids=["unknown-field", "not-a-service-account", "no-private-key", "not-json", "too-large"],
)
def test_it_names_what_is_wrong_with_an_uploaded_key_file(
    superuser_client: Client, onboard: Onboard, content: object, message: str
) -> None:
    tenant_id = onboard().profile.tenant_id

    response = superuser_client.post(
        url("tenant-credential-create", tenant_id),
        {"provider": "GCP", "name": "warehouse", "gcp_key_file": key_file(content)},
    )

    assert response.status_code == 400
    [error] = field_errors(response, "gcp_key_file")
    assert message in error
    assert "PRIVATE KEY" not in html(response)
    assert input_value(html(response), "name") == "warehouse"
    assert not stored_payloads(tenant_id)


def test_it_asks_for_the_key_file_when_none_was_given(superuser_client: Client, onboard: Onboard) -> None:
    tenant_id = onboard().profile.tenant_id

    response = superuser_client.post(
        url("tenant-credential-create", tenant_id), {"provider": "GCP", "name": "warehouse"}
    )

    assert response.status_code == 400
    assert field_errors(response, "gcp_key_file") == [
        "Service-account key file (JSON): upload the key file, or paste its JSON below."
    ]


@pytest.mark.parametrize(
    ("provider", "typed", "field"),
    [
        ("OPENAI", {"openai_api_key": "pk-" + OPENAI_SECRET}, "openai_api_key"),
        ("OPENAI", {"openai_api_key": ANTHROPIC_SECRET}, "openai_api_key"),
        (
            "AWS",
            {"aws_access_key_id": AWS_KEY_ID, "aws_secret_access_key": OPENAI_SECRET},
            "aws_secret_access_key",
        ),
        ("GCP", {"gcp_key_json": json.dumps({"api_key": OPENAI_SECRET})[:-1]}, "gcp_key_json"),
    ],
)
def test_it_never_echoes_a_refused_secret(
    superuser_client: Client, onboard: Onboard, provider: str, typed: dict[str, str], field: str
) -> None:
    tenant_id = onboard().profile.tenant_id

    response = superuser_client.post(
        url("tenant-credential-create", tenant_id), {"provider": provider, "name": "typo", **typed}
    )

    assert response.status_code == 400
    assert field_errors(response, field)
    assert OPENAI_SECRET not in html(response)
    assert ANTHROPIC_SECRET not in html(response)
    assert not stored_payloads(tenant_id)


def test_it_answers_503_with_a_page_when_kms_is_down(superuser_client: Client, onboard: Onboard) -> None:
    tenant_id = onboard().profile.tenant_id
    with cloud_kms_in_use() as fake:
        fake.simulate_outage()

        response = superuser_client.post(
            url("tenant-credential-create", tenant_id),
            {"provider": "OPENAI", "name": "prod", "openai_api_key": OPENAI_SECRET},
        )

    assert response.status_code == 503
    assert "Temporarily unavailable" in html(response)
    assert OPENAI_SECRET not in html(response)
    assert not central_repository(TenantCloudCredential).list(filters={"tenant_id": tenant_id})


# --- replace and deactivate -----------------------------------------------------------------------------
def test_it_replaces_a_credential_with_its_providers_fields_only_then_deactivates_it(
    superuser_client: Client, onboard: Onboard
) -> None:
    tenant_id = onboard().profile.tenant_id
    old = aws_payload()
    row = credential_create(
        tenant_id=tenant_id, provider="AWS", name="billing", payload=old, created_by="user:t"
    )
    replace_url = url("tenant-credential-replace", tenant_id, row.credential_id)

    page = html(superuser_client.get(replace_url))
    new = {**aws_payload(), "region": "us-east-1"}
    replaced = superuser_client.post(
        replace_url, {f"aws_{name}": value for name, value in new.items()}, follow=True
    )

    assert re.findall(r'data-provider="([A-Z]+)"', page) == ["AWS"]
    assert 'name="provider"' not in page
    assert stored_payloads(tenant_id) == [new]
    fingerprint = central_repository(TenantCloudCredential).get(row.credential_id).fingerprint
    assert fingerprint != row.fingerprint
    assert fingerprint in html(replaced)
    assert new["secret_access_key"] not in html(replaced)

    deactivated = superuser_client.post(
        url("tenant-credential-deactivate", tenant_id, row.credential_id), follow=True
    )

    assert central_repository(TenantCloudCredential).get(row.credential_id).is_active is False
    assert any("deactivated" in str(message) for message in deactivated.context["messages"])
