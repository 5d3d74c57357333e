"""Cloud credentials on the BigQuery emulator, with both KMS backends (Cloud KMS via its loopback fake)."""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, timedelta
from typing import Any

import pytest
from django.utils import timezone
from pytest_django import Settings as SettingsWrapper

from tenants_app import kms as kms_module
from tenants_app.kms import KeyManagementService, aad_for
from tenants_app.models import (
    CredentialType,
    PlanName,
    Provider,
    SubscriptionStatus,
    TenantCloudCredential,
    TenantStatus,
    TenantSubscription,
    ValidationStatus,
)
from tenants_app.repositories import central_repository
from tenants_app.services import credentials as credentials_module
from tenants_app.services.credentials import (
    MAX_PAYLOAD_BYTES,
    credential_create,
    credential_deactivate,
    credential_decrypt,
    credential_get,
    credential_list,
    credential_metadata,
    credential_replace,
    credential_validate,
)
from tenants_app.services.errors import (
    AlreadyExists,
    CredentialCorrupted,
    CredentialInactive,
    DoesNotExist,
    PlanLimitReached,
    ServiceError,
    ServiceUnavailable,
    TenantNotActive,
    ValidationFailed,
)
from tenants_app.services.notifications import CREDENTIAL_INVALID, _outbox_take
from tenants_app.services.subscription_overrides import subscription_set_limits
from tests.support.kms_fake import FakeCloudKms
from tests.support.payloads import aws_payload, gcp_payload
from tests.tenants_app.credentials.conftest import MakeTenant

USER = "alice@example.com"


# --- payloads: fresh random secrets each time, so every test checks values nobody else uses ----------
def azure_payload() -> dict[str, str]:
    return {
        "tenant_id": "0f3a1c2e-6b7d-4e8f-9a0b-1c2d3e4f5a6b",
        "client_id": "7a6b5c4d-3e2f-4a1b-8c9d-0e1f2a3b4c5d",
        "client_secret": "Qx8Q~" + secrets.token_urlsafe(30),
        "subscription_id": "11111111-2222-4333-8444-555555555555",
    }


def openai_payload() -> dict[str, str]:
    return {"api_key": "sk-proj-" + secrets.token_urlsafe(36)}


def anthropic_payload() -> dict[str, str]:
    return {"api_key": "sk-ant-api03-" + secrets.token_urlsafe(48)}


PAYLOADS: dict[str, Callable[[], dict[str, str]]] = {
    Provider.GCP: gcp_payload,
    Provider.AWS: aws_payload,
    Provider.AZURE: azure_payload,
    Provider.OPENAI: openai_payload,
    Provider.ANTHROPIC: anthropic_payload,
}
EXPECTED_TYPES = {
    Provider.GCP: CredentialType.SERVICE_ACCOUNT,
    Provider.AWS: CredentialType.ACCESS_KEY,
    Provider.AZURE: CredentialType.OAUTH,
    Provider.OPENAI: CredentialType.API_KEY,
    Provider.ANTHROPIC: CredentialType.API_KEY,
}
SECRET_FIELDS = ("private_key", "secret_access_key", "client_secret", "api_key", "session_token")


def secrets_of(payload: dict[str, Any]) -> list[str]:
    """The secret values of a payload, and a slice from the middle of each (a partial echo is a leak too)."""
    found = []
    for name in SECRET_FIELDS:
        value = payload.get(name)
        if isinstance(value, str) and len(value) >= 12:
            found += [value, value[len(value) // 2 - 6 : len(value) // 2 + 6]]
    return found


def assert_absent(text: str, values: list[str]) -> None:
    for value in values:
        assert value not in text, "a secret value appears in the output"


def error_text(exc: ServiceError) -> str:
    return f"{exc} {exc.message} {json.dumps(exc.errors)} {exc!r}"


def rows_of(tenant_id: str) -> list[TenantCloudCredential]:
    return central_repository(TenantCloudCredential).list(filters={"tenant_id": tenant_id})


def create(
    tenant_id: str, provider: str, name: str | None = None, payload: dict[str, Any] | None = None
) -> TenantCloudCredential:
    """credential_create with a fresh payload and a default name."""
    return credential_create(
        tenant_id=tenant_id,
        provider=provider,
        name=name or f"{provider.lower()} main",
        payload=payload if payload is not None else PAYLOADS[provider](),
        created_by=USER,
    )


# --- providers --------------------------------------------------------------------------------------
@pytest.mark.parametrize("provider", list(PAYLOADS))
def test_it_stores_each_providers_payload_encrypted_and_decrypts_it_back(tenant: str, provider: str) -> None:
    payload = PAYLOADS[provider]()

    row = credential_create(
        tenant_id=tenant, provider=provider, name="main", payload=payload, created_by=USER
    )

    stored = central_repository(TenantCloudCredential).get(row.credential_id)
    assert stored.tenant_id == tenant
    assert stored.provider == provider
    assert stored.credential_name == "main"
    assert stored.credential_type == EXPECTED_TYPES[provider]
    assert stored.validation_status == ValidationStatus.VALID
    assert stored.is_active is True
    assert stored.created_by_user_id == USER
    assert len(stored.fingerprint) == 16
    int(stored.fingerprint, 16)
    ciphertext = bytes(stored.encrypted_credentials)
    for value in secrets_of(payload):
        assert value.encode() not in ciphertext
    assert credential_decrypt(tenant_id=tenant, credential_id=row.credential_id) == payload


def test_it_accepts_a_service_account_key_file_as_json_text(tenant: str) -> None:
    payload = gcp_payload()

    row = create(tenant, Provider.GCP, payload=json.dumps(payload, indent=2))  # type: ignore[arg-type]

    assert credential_decrypt(tenant_id=tenant, credential_id=row.credential_id) == payload


def test_it_accepts_temporary_aws_keys_with_their_session_token() -> None:
    payload = {**aws_payload(), "session_token": secrets.token_urlsafe(200)}
    payload["access_key_id"] = "ASIA" + payload["access_key_id"][4:]

    validated = credential_validate(provider=Provider.AWS, payload=payload)

    assert json.loads(validated.canonical) == payload


def _without(payload: dict[str, Any], name: str) -> dict[str, Any]:
    return {key: value for key, value in payload.items() if key != name}


INVALID: list[tuple[str, str, Callable[[], Any], str]] = [
    ("gcp-type", Provider.GCP, lambda: {**gcp_payload(), "type": "authorized_user"}, "type"),
    ("gcp-no-key", Provider.GCP, lambda: _without(gcp_payload(), "private_key"), "private_key"),
    (
        "gcp-key-not-pem",
        Provider.GCP,
        lambda: {**gcp_payload(), "private_key": "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC" + secrets.token_hex(20)},
        "private_key",
    ),
    ("gcp-key-number", Provider.GCP, lambda: {**gcp_payload(), "private_key": 42}, "private_key"),
    ("gcp-email", Provider.GCP, lambda: {**gcp_payload(), "client_email": "pipelines"}, "client_email"),
    ("gcp-project", Provider.GCP, lambda: {**gcp_payload(), "project_id": "Acme Project!"}, "project_id"),
    ("gcp-token-uri", Provider.GCP, lambda: {**gcp_payload(), "token_uri": "http://x.test/t"}, "token_uri"),
    ("gcp-no-token-uri", Provider.GCP, lambda: _without(gcp_payload(), "token_uri"), "token_uri"),
    (
        "gcp-unknown-field",
        Provider.GCP,
        lambda: {**gcp_payload(), "password": "hunter2-" + secrets.token_hex(8)},
        "password",
    ),
    (
        "field-name-holding-a-secret",
        Provider.OPENAI,
        lambda: {**openai_payload(), "sk-proj-" + secrets.token_urlsafe(30): "x"},
        "payload",
    ),
    ("aws-key-id", Provider.AWS, lambda: {**aws_payload(), "access_key_id": "AKIA1234"}, "access_key_id"),
    (
        "aws-secret-39",
        Provider.AWS,
        lambda: {**aws_payload(), "secret_access_key": base64.b64encode(os.urandom(30)).decode()[:39]},
        "secret_access_key",
    ),
    (
        "aws-secret-with-space",
        Provider.AWS,
        lambda: {**aws_payload(), "secret_access_key": base64.b64encode(os.urandom(30)).decode()[:39] + " "},
        "secret_access_key",
    ),
    (
        # AWS never issues `=` in a secret access key, and the secret detector would not find one.
        "aws-secret-with-padding",
        Provider.AWS,
        lambda: {**aws_payload(), "secret_access_key": base64.b64encode(os.urandom(30)).decode()[:39] + "="},
        "secret_access_key",
    ),
    (
        "aws-no-secret",
        Provider.AWS,
        lambda: _without(aws_payload(), "secret_access_key"),
        "secret_access_key",
    ),
    ("aws-region", Provider.AWS, lambda: {**aws_payload(), "region": "mars"}, "region"),
    (
        "aws-asia-without-token",
        Provider.AWS,
        lambda: {**aws_payload(), "access_key_id": "ASIA" + "B" * 16},
        "session_token",
    ),
    (
        "azure-tenant",
        Provider.AZURE,
        lambda: {**azure_payload(), "tenant_id": "acme.onmicrosoft.com"},
        "tenant_id",
    ),
    ("azure-client", Provider.AZURE, lambda: {**azure_payload(), "client_id": "12345"}, "client_id"),
    ("azure-empty-secret", Provider.AZURE, lambda: {**azure_payload(), "client_secret": ""}, "client_secret"),
    (
        "azure-secret-newline",
        Provider.AZURE,
        lambda: {**azure_payload(), "client_secret": "Qx8Q~" + secrets.token_urlsafe(30) + "\n"},
        "client_secret",
    ),
    (
        "azure-subscription",
        Provider.AZURE,
        lambda: {**azure_payload(), "subscription_id": "x"},
        "subscription_id",
    ),
    (
        "openai-prefix",
        Provider.OPENAI,
        lambda: {"api_key": "pk-live-" + secrets.token_urlsafe(30)},
        "api_key",
    ),
    ("openai-anthropic-key", Provider.OPENAI, anthropic_payload, "api_key"),
    (
        "openai-unknown-field",
        Provider.OPENAI,
        lambda: {**openai_payload(), "organization": "org-" + secrets.token_hex(8)},
        "organization",
    ),
    ("anthropic-openai-key", Provider.ANTHROPIC, openai_payload, "api_key"),
    ("anthropic-short", Provider.ANTHROPIC, lambda: {"api_key": "sk-ant-" + "a" * 19}, "api_key"),
    ("anthropic-missing", Provider.ANTHROPIC, lambda: {}, "api_key"),
    ("unknown-provider", "DIGITALOCEAN", openai_payload, "provider"),
    ("payload-list", Provider.OPENAI, lambda: [openai_payload()], "payload"),
    (
        "payload-not-json",
        Provider.OPENAI,
        lambda: '{"api_key": "sk-proj-' + secrets.token_urlsafe(30),
        "payload",
    ),
    ("payload-deep-json", Provider.OPENAI, lambda: "[" * 20_000 + "]" * 20_000, "payload"),
    (
        "payload-too-large-text",
        Provider.GCP,
        lambda: json.dumps({**gcp_payload(), "client_id": "1" * MAX_PAYLOAD_BYTES}),
        "payload",
    ),
    (
        "payload-too-large-object",
        Provider.GCP,
        lambda: {
            **gcp_payload(),
            "universe_domain": "googleapis.com",
            "private_key": "x" * MAX_PAYLOAD_BYTES,
        },
        "private_key",
    ),
]


@pytest.mark.parametrize(
    ("provider", "make_payload", "field"),
    [case[1:] for case in INVALID],
    ids=[case[0] for case in INVALID],
)
def test_it_refuses_each_invalid_shape_naming_the_field_and_never_the_value(
    provider: str, make_payload: Callable[[], Any], field: str
) -> None:
    payload = make_payload()

    with pytest.raises(ValidationFailed) as excinfo:
        credential_validate(provider=provider, payload=payload)

    assert field in excinfo.value.errors
    assert excinfo.value.status == 400
    text = error_text(excinfo.value)
    if isinstance(payload, dict):
        # No value of the payload is ever repeated, secret or not (the key name case included).
        values = [v for v in payload.values() if isinstance(v, str) and len(v) >= 8]
        values += [k for k in payload if len(k) >= 20]
        assert_absent(text, values + secrets_of(payload))
    elif isinstance(payload, str):
        assert_absent(text, [payload[8:40]])


def test_it_stores_nothing_for_an_invalid_payload(tenant: str) -> None:
    with pytest.raises(ValidationFailed):
        create(tenant, Provider.AWS, payload={**aws_payload(), "secret_access_key": "short"})

    assert rows_of(tenant) == []


# --- tenant, plan and name rules --------------------------------------------------------------------
def test_it_enforces_the_starter_plans_three_providers_but_allows_more_credentials_per_provider(
    tenant: str,
) -> None:
    for provider in (Provider.GCP, Provider.AWS, Provider.AZURE):
        create(tenant, provider)

    with pytest.raises(PlanLimitReached) as excinfo:
        create(tenant, Provider.OPENAI)
    assert excinfo.value.status == 403
    assert "STARTER" in excinfo.value.message
    assert "3 cloud providers" in excinfo.value.message

    create(tenant, Provider.AWS, name="aws backup")
    assert sorted(row.provider for row in rows_of(tenant)) == ["AWS", "AWS", "AZURE", "GCP"]


def test_it_frees_a_provider_slot_and_hides_the_credential_when_deactivated(tenant: str) -> None:
    gcp = create(tenant, Provider.GCP)
    create(tenant, Provider.AWS)
    azure = create(tenant, Provider.AZURE)

    deactivated = credential_deactivate(tenant_id=tenant, credential_id=azure.credential_id, updated_by="bob")
    openai = create(tenant, Provider.OPENAI)

    assert deactivated.is_active is False
    stored = central_repository(TenantCloudCredential).get(azure.credential_id)
    assert stored.is_active is False
    assert stored.updated_by_user_id == "bob"
    assert stored.updated_at is not None
    listed = [row.credential_id for row in credential_list(tenant_id=tenant)]
    assert azure.credential_id not in listed
    assert {gcp.credential_id, openai.credential_id} <= set(listed)
    everything = [row.credential_id for row in credential_list(tenant_id=tenant, include_inactive=True)]
    assert azure.credential_id in everything
    with pytest.raises(CredentialInactive):
        credential_decrypt(tenant_id=tenant, credential_id=azure.credential_id)
    with pytest.raises(CredentialInactive):
        credential_replace(
            tenant_id=tenant, credential_id=azure.credential_id, payload=azure_payload(), updated_by="bob"
        )
    # Deactivating twice is harmless.
    assert (
        credential_deactivate(tenant_id=tenant, credential_id=azure.credential_id, updated_by="bob").is_active
        is False
    )


def test_it_allows_more_providers_on_a_bigger_plan(make_tenant: MakeTenant) -> None:
    tenant_id = make_tenant(plan=PlanName.PROFESSIONAL)

    for provider in PAYLOADS:
        create(tenant_id, provider)

    assert len(credential_list(tenant_id=tenant_id)) == 5


def test_it_refuses_a_second_active_credential_with_the_same_name_for_a_provider(tenant: str) -> None:
    first = create(tenant, Provider.OPENAI, name="prod")

    with pytest.raises(AlreadyExists) as excinfo:
        create(tenant, Provider.OPENAI, name="prod")
    assert excinfo.value.status == 409
    create(tenant, Provider.ANTHROPIC, name="prod")
    credential_deactivate(tenant_id=tenant, credential_id=first.credential_id, updated_by=USER)
    create(tenant, Provider.OPENAI, name="prod")

    assert len([row for row in rows_of(tenant) if row.credential_name == "prod"]) == 3


def test_it_lets_only_one_of_two_racing_requests_take_a_name(
    tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both requests pass the pre-check before either writes: the post-insert re-check must catch it."""
    barrier = threading.Barrier(2, timeout=30)
    real = kms_module.get_kms()

    class BarrierKms(KeyManagementService):
        backend = "barrier"

        def encrypt(self, plaintext: bytes, *, aad: bytes) -> bytes:
            barrier.wait()
            return real.encrypt(plaintext, aad=aad)

        def decrypt(self, ciphertext: bytes, *, aad: bytes) -> bytes:
            return real.decrypt(ciphertext, aad=aad)

        def check(self) -> None:
            real.check()

    monkeypatch.setattr(credentials_module, "get_kms", BarrierKms)
    outcomes: list[object] = []

    def attempt() -> None:
        try:
            outcomes.append(create(tenant, Provider.OPENAI, name="shared"))
        except AlreadyExists as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    successes = [o for o in outcomes if isinstance(o, TenantCloudCredential)]
    assert len(outcomes) == 2
    assert len(successes) <= 1
    assert len(rows_of(tenant)) == len(successes)


def test_it_refuses_unknown_and_inactive_tenants(make_tenant: MakeTenant) -> None:
    suspended = make_tenant(status=TenantStatus.SUSPENDED)
    unsubscribed = make_tenant(subscription_status=SubscriptionStatus.CANCELLED)

    with pytest.raises(DoesNotExist):
        create("no_such_tenant", Provider.OPENAI)
    with pytest.raises(TenantNotActive) as excinfo:
        create(suspended, Provider.OPENAI)
    assert excinfo.value.status == 403
    assert "SUSPENDED" in excinfo.value.message
    with pytest.raises(PlanLimitReached, match="no active subscription"):
        create(unsubscribed, Provider.OPENAI)
    assert rows_of(suspended) == []
    assert rows_of(unsubscribed) == []


def test_it_counts_a_trial_subscription(make_tenant: MakeTenant) -> None:
    trial = make_tenant(status=TenantStatus.TRIAL, subscription_status=SubscriptionStatus.TRIAL)

    assert create(trial, Provider.OPENAI).is_active is True


def test_it_refuses_a_trial_past_its_last_day_as_expired(make_tenant: MakeTenant) -> None:
    trial = make_tenant(status=TenantStatus.TRIAL, subscription_status=SubscriptionStatus.TRIAL)
    yesterday = timezone.now().astimezone(UTC).date() - timedelta(days=1)
    central_repository(TenantSubscription).update_where(
        {"trial_end_date": yesterday}, filters={"tenant_id": trial}
    )

    with pytest.raises(PlanLimitReached, match="no active subscription") as excinfo:
        create(trial, Provider.OPENAI)
    assert "EXPIRED" in excinfo.value.message
    assert rows_of(trial) == []


def test_it_enforces_a_per_tenant_max_providers_override(make_tenant: MakeTenant) -> None:
    narrow = make_tenant()  # STARTER: 3 providers, overridden down to 1
    wide = make_tenant()  # STARTER: 3 providers, overridden up to 4
    subscription_set_limits(tenant_id=narrow, actor="user:alice", max_providers=1)
    subscription_set_limits(tenant_id=wide, actor="user:alice", max_providers=4)
    create(narrow, Provider.GCP)
    for provider in (Provider.GCP, Provider.AWS, Provider.AZURE, Provider.OPENAI):
        create(wide, provider)

    with pytest.raises(PlanLimitReached) as excinfo:
        create(narrow, Provider.AWS)
    assert "1 cloud providers" in excinfo.value.message
    with pytest.raises(PlanLimitReached) as excinfo:
        create(wide, Provider.ANTHROPIC)
    assert "4 cloud providers" in excinfo.value.message
    assert [row.provider for row in rows_of(narrow)] == ["GCP"]
    assert len(rows_of(wide)) == 4


# --- rotation ---------------------------------------------------------------------------------------
def test_it_replaces_a_credential_with_a_new_fingerprint_and_ciphertext(tenant: str) -> None:
    old_payload = aws_payload()
    row = create(tenant, Provider.AWS, payload=old_payload)
    new_payload = aws_payload()

    replaced = credential_replace(
        tenant_id=tenant, credential_id=row.credential_id, payload=new_payload, updated_by="bob"
    )

    stored = central_repository(TenantCloudCredential).get(row.credential_id)
    assert stored.fingerprint == replaced.fingerprint != row.fingerprint
    assert bytes(stored.encrypted_credentials) != bytes(row.encrypted_credentials)
    assert stored.updated_by_user_id == "bob"
    assert stored.updated_at is not None
    assert stored.created_by_user_id == USER
    assert stored.credential_name == row.credential_name
    assert credential_decrypt(tenant_id=tenant, credential_id=row.credential_id) == new_payload
    assert len(rows_of(tenant)) == 1


def test_it_refuses_a_replacement_shaped_for_another_provider(tenant: str) -> None:
    row = create(tenant, Provider.AWS)

    with pytest.raises(ValidationFailed):
        credential_replace(
            tenant_id=tenant, credential_id=row.credential_id, payload=openai_payload(), updated_by=USER
        )

    stored = central_repository(TenantCloudCredential).get(row.credential_id)
    assert bytes(stored.encrypted_credentials) == bytes(row.encrypted_credentials)


# --- isolation and AAD binding ----------------------------------------------------------------------
def test_it_answers_another_tenants_credential_exactly_like_a_missing_one(
    tenant: str, other_tenant: str
) -> None:
    row = create(tenant, Provider.OPENAI)
    calls: dict[str, Callable[[str], object]] = {
        "get": lambda cid: credential_get(tenant_id=other_tenant, credential_id=cid),
        "replace": lambda cid: credential_replace(
            tenant_id=other_tenant, credential_id=cid, payload=openai_payload(), updated_by="mallory"
        ),
        "deactivate": lambda cid: credential_deactivate(
            tenant_id=other_tenant, credential_id=cid, updated_by="mallory"
        ),
        "decrypt": lambda cid: credential_decrypt(tenant_id=other_tenant, credential_id=cid),
    }

    for name, call in calls.items():
        with pytest.raises(DoesNotExist) as theirs:
            call(row.credential_id)
        with pytest.raises(DoesNotExist) as missing:
            call("cred_doesnotexist")
        assert theirs.value.status == missing.value.status == 404, name
        assert theirs.value.errors == missing.value.errors, name
        assert theirs.value.message.replace(row.credential_id, "ID") == missing.value.message.replace(
            "cred_doesnotexist", "ID"
        ), name

    stored = central_repository(TenantCloudCredential).get(row.credential_id)
    assert stored.is_active is True
    assert stored.updated_by_user_id == USER
    assert bytes(stored.encrypted_credentials) == bytes(row.encrypted_credentials)
    assert credential_list(tenant_id=other_tenant) == []


def test_it_refuses_to_decrypt_a_ciphertext_copied_to_another_row(tenant: str, other_tenant: str) -> None:
    source = create(tenant, Provider.OPENAI)
    same_tenant = create(tenant, Provider.OPENAI, name="second")
    other = create(other_tenant, Provider.OPENAI)
    repository = central_repository(TenantCloudCredential)

    for target in (same_tenant, other):
        repository.update(
            target.credential_id, {"encrypted_credentials": bytes(source.encrypted_credentials)}
        )
        with pytest.raises(CredentialCorrupted) as excinfo:
            credential_decrypt(tenant_id=target.tenant_id, credential_id=target.credential_id)
        assert excinfo.value.status == 500
        assert "replace" in excinfo.value.message

    assert credential_decrypt(tenant_id=tenant, credential_id=source.credential_id)["api_key"].startswith(
        "sk-"
    )


def test_it_recovers_a_corrupted_credential_by_replacing_it(tenant: str) -> None:
    row = create(tenant, Provider.OPENAI)
    central_repository(TenantCloudCredential).update(
        row.credential_id, {"encrypted_credentials": b"garbage" * 8}
    )
    payload = openai_payload()

    credential_replace(tenant_id=tenant, credential_id=row.credential_id, payload=payload, updated_by=USER)

    assert credential_decrypt(tenant_id=tenant, credential_id=row.credential_id) == payload


# --- Cloud KMS --------------------------------------------------------------------------------------
def test_it_round_trips_through_cloud_kms_bound_to_the_row(tenant: str, cloud_kms: FakeCloudKms) -> None:
    payload = gcp_payload()

    row = create(tenant, Provider.GCP, payload=payload)

    assert credential_decrypt(tenant_id=tenant, credential_id=row.credential_id) == payload
    assert cloud_kms.calls == {"encrypt": 1, "decrypt": 1}
    expected_aad = aad_for("tenant_cloud_credentials", tenant, row.credential_id)
    for request in cloud_kms.requests:
        assert base64.b64decode(request["additionalAuthenticatedData"]) == expected_aad


def test_it_refuses_a_copied_ciphertext_through_cloud_kms(tenant: str, cloud_kms: FakeCloudKms) -> None:
    source = create(tenant, Provider.OPENAI)
    target = create(tenant, Provider.OPENAI, name="second")
    central_repository(TenantCloudCredential).update(
        target.credential_id, {"encrypted_credentials": bytes(source.encrypted_credentials)}
    )

    with pytest.raises(CredentialCorrupted):
        credential_decrypt(tenant_id=tenant, credential_id=target.credential_id)

    # The tenant is told (credential.invalid), with ids only.
    _, events = _outbox_take(timezone.now())
    invalid = [e for e in events if e.event_type == CREDENTIAL_INVALID]
    assert [(e.tenant_id, e.data["credential_id"]) for e in invalid] == [(tenant, target.credential_id)]
    assert "encrypted" not in repr(invalid[0].data)


def test_it_answers_503_and_stores_nothing_when_kms_is_down(tenant: str, cloud_kms: FakeCloudKms) -> None:
    existing = create(tenant, Provider.AWS)
    cloud_kms.simulate_outage()
    payload = openai_payload()

    with pytest.raises(ServiceUnavailable) as excinfo:
        create(tenant, Provider.OPENAI, payload=payload)
    assert excinfo.value.status == 503
    assert_absent(error_text(excinfo.value), secrets_of(payload))
    assert cloud_kms.calls["encrypt"] > 1, "the real client retried before giving up"
    with pytest.raises(ServiceUnavailable):
        credential_replace(
            tenant_id=tenant, credential_id=existing.credential_id, payload=aws_payload(), updated_by=USER
        )
    with pytest.raises(ServiceUnavailable):
        credential_decrypt(tenant_id=tenant, credential_id=existing.credential_id)

    rows = rows_of(tenant)
    assert [row.credential_id for row in rows] == [existing.credential_id]
    assert bytes(rows[0].encrypted_credentials) == bytes(existing.encrypted_credentials)
    assert rows[0].fingerprint == existing.fingerprint


def test_it_bounds_the_outage_by_the_kms_timeout(
    tenant: str, cloud_kms: FakeCloudKms, settings: SettingsWrapper
) -> None:
    cloud_kms.delay_seconds = 30.0

    started = time.monotonic()
    with pytest.raises(ServiceUnavailable):
        create(tenant, Provider.OPENAI)

    assert time.monotonic() - started < settings.KMS_TIMEOUT_SECONDS + 3.0
    assert rows_of(tenant) == []


# --- secrets never leave ----------------------------------------------------------------------------
METADATA_KEYS = {
    "credential_id",
    "tenant_id",
    "provider",
    "name",
    "type",
    "fingerprint",
    "validation_status",
    "is_active",
    "created_at",
    "updated_at",
    "created_by",
    "updated_by",
}


@pytest.mark.parametrize("provider", list(PAYLOADS))
def test_it_shows_metadata_without_payload_or_ciphertext_and_a_safe_repr(tenant: str, provider: str) -> None:
    payload = PAYLOADS[provider]()
    row = create(tenant, provider, payload=payload)
    stored = credential_get(tenant_id=tenant, credential_id=row.credential_id)

    metadata = credential_metadata(stored)

    assert set(metadata) == METADATA_KEYS
    assert metadata["provider"] == provider
    assert metadata["type"] == EXPECTED_TYPES[provider]
    assert metadata["fingerprint"] == row.fingerprint
    assert metadata["is_active"] is True
    text = json.dumps(metadata)
    ciphertext = bytes(stored.encrypted_credentials)
    for shown in (text, repr(stored), str(stored), repr(row), str(row)):
        assert_absent(shown, secrets_of(payload))
        assert base64.b64encode(ciphertext).decode() not in shown
        assert ciphertext.hex() not in shown
        assert "encrypted" not in shown


def test_it_shows_a_legacy_row_as_active_and_unverified(tenant: str) -> None:
    """Rows of the original system have NULL in our columns."""
    central_repository(TenantCloudCredential).insert(
        TenantCloudCredential(
            credential_id="legacy_1", tenant_id=tenant, provider=Provider.AWS, encrypted_credentials=b"old"
        )
    )

    [row] = credential_list(tenant_id=tenant)
    metadata = credential_metadata(row)

    assert metadata["is_active"] is True
    assert metadata["validation_status"] == ValidationStatus.UNVERIFIED
    assert metadata["name"] is None


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def test_it_keeps_every_secret_out_of_the_logs(
    make_tenant: MakeTenant, debug_logs: pytest.LogCaptureFixture
) -> None:
    tenant = make_tenant(plan=PlanName.PROFESSIONAL)
    used = [make() for make in PAYLOADS.values()]
    rows = [
        create(tenant, provider, payload=payload) for provider, payload in zip(PAYLOADS, used, strict=True)
    ]
    used.append(anthropic_payload())
    credential_replace(
        tenant_id=tenant, credential_id=rows[-1].credential_id, payload=used[-1], updated_by=USER
    )
    for row in rows:
        credential_decrypt(tenant_id=tenant, credential_id=row.credential_id)
    central_repository(TenantCloudCredential).update(
        rows[-1].credential_id, {"encrypted_credentials": bytes(rows[0].encrypted_credentials)}
    )
    with pytest.raises(CredentialCorrupted):
        credential_decrypt(tenant_id=tenant, credential_id=rows[-1].credential_id)
    used.append({**aws_payload(), "access_key_id": "bad"})
    with pytest.raises(ValidationFailed):
        create(tenant, Provider.AWS, name="bad", payload=used[-1])

    assert debug_logs.records, "the capture was listening"
    assert any("created" in record.getMessage() for record in debug_logs.records)
    assert any(record.levelno == logging.ERROR for record in debug_logs.records), "corruption is logged"
    secret_values = [value for payload in used for value in secrets_of(payload)]
    encoded = [base64.b64encode(value.encode()).decode() for value in secret_values if len(value) > 12]
    for record in debug_logs.records:
        assert_absent(f"{record.getMessage()} {record.__dict__}", secret_values + encoded)
    assert_absent(debug_logs.text, secret_values + encoded)


def test_it_keeps_secrets_out_of_the_logs_with_cloud_kms_in_an_outage(
    tenant: str, cloud_kms: FakeCloudKms, debug_logs: pytest.LogCaptureFixture
) -> None:
    payload = gcp_payload()
    row = create(tenant, Provider.GCP, payload=payload)
    credential_decrypt(tenant_id=tenant, credential_id=row.credential_id)
    cloud_kms.simulate_outage()
    with pytest.raises(ServiceUnavailable):
        credential_replace(
            tenant_id=tenant, credential_id=row.credential_id, payload=payload, updated_by=USER
        )

    assert any(record.levelno == logging.WARNING for record in debug_logs.records)
    body_line = payload["private_key"].splitlines()[1]
    for record in debug_logs.records:
        assert_absent(f"{record.getMessage()} {record.__dict__}", [*secrets_of(payload), body_line])
