"""pipeline_execution.service_account_gateway: a gateway acting as a tenant's service account."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.oauth2 import service_account

from bigquery_backend.client import BigQueryGateway
from tenants_app.pipeline_execution import CredentialUnusable, service_account_gateway
from tests.support.payloads import gcp_payload


def real_key_file() -> dict[str, str]:
    """A key file whose private key google-auth can load (gcp_payload's is random bytes)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {**gcp_payload(), "private_key": pem}


def test_it_builds_a_gateway_acting_as_the_service_account_on_our_project(gateway: BigQueryGateway) -> None:
    info = real_key_file()

    tenant_gateway = service_account_gateway(info)

    credentials = tenant_gateway.client._credentials
    assert isinstance(credentials, service_account.Credentials)
    assert credentials.service_account_email == info["client_email"]
    # The tenant datasets are ours: the identity is the tenant's, the project is not.
    assert tenant_gateway.project == gateway.project
    tenant_gateway.client.close()


def test_it_refuses_a_key_it_cannot_load_without_quoting_it() -> None:
    info = gcp_payload()  # a private key block of random bytes

    with pytest.raises(CredentialUnusable) as refused:
        service_account_gateway(info)

    body = info["private_key"].splitlines()[1]
    assert body not in str(refused.value)
