"""The credential forms in a real browser, each at a laptop's 1366 px and a phone's 390 px: choosing a
provider shows its fields only, GCP takes its key file as an upload, an AWS error keeps the key id but not
the secret, and OpenAI takes its key. The new-key form starts with the read-only scopes."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Page, expect

from tenants_app.portal.pages import isolated_text
from tests.portal.browser.conftest import LAPTOP, PHONE, Login, Onboard, Screenshot, assert_fits, set_width
from tests.support.payloads import gcp_payload

AWS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
TenantPage = Callable[[int], str]
# Every credential form is checked at both widths (issue 14's Done-when).
WIDTHS = pytest.mark.parametrize("width", [LAPTOP, PHONE])


@pytest.fixture
def tenant_page(page: Page, superuser: User, login: Login, onboard: Onboard) -> TenantPage:
    """Open a new tenant's page as a superuser at a width; the tenant's id."""

    def open_at(width: int) -> str:
        tenant_id = onboard().profile.tenant_id
        set_width(page, width)
        login(page, superuser)
        page.goto(f"/admin/tenants/{tenant_id}/")
        return tenant_id

    return open_at


def open_new_credential_form(page: Page) -> None:
    page.locator("#new-credential-link").click()
    expect(page.locator("#credential-form")).to_be_visible()


@WIDTHS
def test_it_adds_a_gcp_credential_by_uploading_its_key_file(
    page: Page, tenant_page: TenantPage, screenshot: Screenshot, width: int
) -> None:
    tenant_page(width)
    open_new_credential_form(page)

    page.select_option("#id_provider", "GCP")
    page.fill("#id_name", "warehouse")
    page.set_input_files(
        "#id_gcp_key_file",
        files=[
            {"name": "key.json", "mimeType": "application/json", "buffer": json.dumps(gcp_payload()).encode()}
        ],
    )

    # Only the chosen provider's fields show.
    expect(page.locator("#provider-gcp")).to_be_visible()
    expect(page.locator("#provider-aws")).to_be_hidden()
    expect(page.locator("#provider-openai")).to_be_hidden()
    assert_fits(page, width)
    screenshot(page, f"20-credential-form-gcp-{width}")
    page.get_by_role("button", name="Add").click()

    expect(page.locator(".messagelist .success")).to_contain_text(
        f"Credential {isolated_text('warehouse')} (GCP"
    )
    expect(page.locator("#tenant-credentials")).to_contain_text("warehouse")
    assert_fits(page, width)


@WIDTHS
def test_it_keeps_the_aws_key_id_and_clears_the_secret_after_an_error(
    page: Page, tenant_page: TenantPage, screenshot: Screenshot, width: int
) -> None:
    tenant_page(width)
    open_new_credential_form(page)

    page.select_option("#id_provider", "AWS")
    expect(page.locator("#provider-aws")).to_be_visible()
    expect(page.locator("#provider-gcp")).to_be_hidden()
    page.fill("#id_name", "billing")
    page.fill("#id_aws_access_key_id", AWS_KEY_ID)
    page.fill("#id_aws_secret_access_key", "too-short-to-be-a-secret")
    page.get_by_role("button", name="Add").click()

    secret_row = page.locator(".field-aws_secret_access_key")
    expect(secret_row.locator(".errorlist")).to_contain_text("Secret access key: Must be the 40-character")
    expect(page.locator("#id_aws_access_key_id")).to_have_value(AWS_KEY_ID)
    expect(page.locator("#id_name")).to_have_value("billing")
    expect(page.locator("#id_provider")).to_have_value("AWS")
    expect(page.locator("#id_aws_secret_access_key")).to_have_value("")
    expect(secret_row).to_contain_text("For your safety, enter the secret again")
    # The chosen provider's fields are still the ones shown, and the page fits the screen.
    expect(page.locator("#provider-aws")).to_be_visible()
    expect(page.locator("#provider-gcp")).to_be_hidden()
    expect(page.get_by_role("button", name="Add")).to_be_visible()
    assert_fits(page, width)
    screenshot(page, f"20-credential-form-aws-{width}")


@WIDTHS
def test_it_adds_an_openai_credential_by_its_key(
    page: Page, tenant_page: TenantPage, screenshot: Screenshot, width: int
) -> None:
    tenant_page(width)
    open_new_credential_form(page)
    api_key = "sk-" + secrets.token_hex(20)

    page.select_option("#id_provider", "OPENAI")
    expect(page.locator("#provider-openai")).to_be_visible()
    expect(page.locator("#provider-gcp")).to_be_hidden()
    expect(page.locator("#provider-aws")).to_be_hidden()
    page.fill("#id_name", "assistant")
    page.fill("#id_openai_api_key", api_key)
    assert_fits(page, width)
    screenshot(page, f"20-credential-form-openai-{width}")
    page.get_by_role("button", name="Add").click()

    expect(page.locator(".messagelist .success")).to_contain_text(
        f"Credential {isolated_text('assistant')} (OpenAI"
    )
    expect(page.locator("#tenant-credentials")).to_contain_text("assistant")
    assert api_key not in page.content()
    assert_fits(page, width)


def test_it_starts_a_new_key_with_the_read_only_scopes(
    page: Page, tenant_page: TenantPage, screenshot: Screenshot
) -> None:
    tenant_page(LAPTOP)

    page.locator("#new-key-link").click()

    ticked = page.locator("input[name=scopes]:checked")
    expect(ticked).to_have_count(2)
    assert [box.get_attribute("value") for box in ticked.all()] == ["tenant:read", "pipelines:read"]
    assert_fits(page, LAPTOP)
    screenshot(page, "21-key-create-1366")
