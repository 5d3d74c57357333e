"""Bidi control characters are refused in ids and names by every service that takes one, naming the field."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tenants_app.services.api_keys import api_key_create
from tenants_app.services.credentials import credential_create
from tenants_app.services.errors import ValidationFailed
from tenants_app.services.onboarding import tenant_onboard
from tenants_app.services.pipelines import pipeline_config_create
from tenants_app.services.tenants import tenant_get, tenant_update
from tenants_app.services.text_rules import BIDI_CONTROLS, bidi_reason
from tenants_app.services.webhooks import webhook_endpoint_create
from tests.tenants_app.services.quota_factories import tenant_with_subscription

RLO = "\u202e"
OPENAI_SECRET = "sk-" + "Hq4" * 12


@pytest.fixture(scope="module")
def tenant(central: str) -> str:
    return tenant_with_subscription(plan="SCALE")


# Each service that takes an id or a name, called with `text` as that field: (field, call).
CALLS: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    "onboarding": (
        "company_name",
        lambda tenant, text: tenant_onboard(
            tenant_id="t_bidi_new",
            company_name=text,
            admin_email="ops@acme.example",
            plan="STARTER",
            created_by="user:test",
        ),
    ),
    "tenant edit": (
        "company_name",
        lambda tenant, text: tenant_update(tenant_id=tenant, actor="user:test", company_name=text),
    ),
    "API key": (
        "name",
        lambda tenant, text: api_key_create(
            tenant_id=tenant, name=text, scopes=["tenant:read"], created_by="user:test"
        ),
    ),
    "credential": (
        "name",
        lambda tenant, text: credential_create(
            tenant_id=tenant,
            provider="OPENAI",
            name=text,
            payload={"api_key": OPENAI_SECRET},
            created_by="user:test",
        ),
    ),
    "pipeline config": (
        "domain",
        lambda tenant, text: pipeline_config_create(
            tenant_id=tenant,
            provider="GCP",
            domain=text,
            pipeline_template="sql_transform",
            schedule_cron="0 * * * *",
            parameters={"source_table": "raw", "destination_table": "clean"},
            actor="user:test",
        ),
    ),
    "webhook": (
        "description",
        lambda tenant, text: webhook_endpoint_create(
            tenant_id=tenant, url="http://127.0.0.1:9/in", description=text, created_by="user:test"
        ),
    ),
}


@pytest.mark.parametrize("character", sorted(BIDI_CONTROLS))
def test_it_names_each_bidi_control_by_its_code_point(character: str) -> None:
    reason = bidi_reason(f"Acme{character} Corp")

    assert reason is not None
    assert f"U+{ord(character):04X}" in reason
    assert character not in reason  # the message itself cannot be reordered


@pytest.mark.parametrize(
    "text",
    [
        "\u0634\u0631\u0643\u0629 \u0627\u0644\u0623\u0645\u0644",
        "\u05d0\u05e7\u05de\u05d4 Ltd",
        "Acme \U0001f4a5",
    ],
)
def test_it_leaves_right_to_left_scripts_and_emoji_alone(text: str) -> None:
    assert bidi_reason(text) is None


@pytest.mark.parametrize("service", sorted(CALLS))
def test_it_refuses_a_bidi_control_in_a_name_with_an_error_naming_the_field(
    tenant: str, service: str, settings: pytest.FixtureRequest
) -> None:
    settings.WEBHOOK_ALLOW_LOCALHOST = True  # type: ignore[attr-defined]  # a URL that passes, offline
    field, call = CALLS[service]

    with pytest.raises(ValidationFailed) as refused:
        call(tenant, f"Acme {RLO}dic.elpmaxe Corp")

    assert "U+202E" in " ".join(refused.value.errors[field])


def test_it_stores_a_right_to_left_company_name_verbatim(tenant: str) -> None:
    name = "\u0634\u0631\u0643\u0629 \u0627\u0644\u0623\u0645\u0644"

    tenant_update(tenant_id=tenant, actor="user:test", company_name=name)

    assert tenant_get(tenant_id=tenant).company_name == name


@pytest.mark.parametrize("service", ["onboarding", "tenant edit"])
def test_it_refuses_a_bidi_control_in_an_admin_email_that_djangos_validator_lets_through(
    tenant: str, service: str
) -> None:
    address = f"ops@acme{RLO}.example.com"
    calls = {
        "onboarding": lambda: tenant_onboard(
            tenant_id="t_bidi_mail",
            company_name="Acme",
            admin_email=address,
            plan="STARTER",
            created_by="user:test",
        ),
        "tenant edit": lambda: tenant_update(tenant_id=tenant, actor="user:test", admin_email=address),
    }

    with pytest.raises(ValidationFailed) as refused:
        calls[service]()

    assert refused.value.errors["admin_email"] == [bidi_reason(address)]


def test_it_stores_an_edited_address_as_typed_like_onboarding_does(tenant: str) -> None:
    tenant_update(tenant_id=tenant, actor="user:test", admin_email="  Ops.Team@Acme.example ")

    assert tenant_get(tenant_id=tenant).admin_email == "Ops.Team@Acme.example"
