"""The portal's key forms: a new key starts with the least-privilege scopes, and a rotation names the
replacement after its predecessor (the service's rule, as the API's rotations)."""

# `onboard` comes from tests/portal/tenant_helpers.py by import, so test parameters shadow the import.
# ruff: noqa: F811

from __future__ import annotations

import re
from datetime import UTC

from django.test import Client
from django.utils import timezone

from tenants_app.models import TenantApiKey
from tenants_app.repositories import central_repository
from tenants_app.services.api_key_scopes import DEFAULT_API_KEY_SCOPES
from tests.portal.tenant_helpers import Onboard, form_value, html, messages_of, onboard, url  # noqa: F401 - a fixture

KEY_PATTERN = re.compile(r"cvg_[a-z]+_[A-Za-z0-9]{40}")
FSI, PDI = "\u2068", "\u2069"  # FIRST STRONG ISOLATE, POP DIRECTIONAL ISOLATE


def utc_today() -> str:
    return timezone.now().astimezone(UTC).date().isoformat()


def test_it_starts_a_new_key_with_the_read_only_scopes_ticked(
    superuser_client: Client, onboard: Onboard
) -> None:
    tenant_id = onboard().profile.tenant_id

    page = html(superuser_client.get(url("tenant-key-create", tenant_id)))

    ticked = re.findall(r'<input type="checkbox" name="scopes" value="([^"]+)"[^>]*checked', page)
    assert ticked == list(DEFAULT_API_KEY_SCOPES) == ["tenant:read", "pipelines:read"]


def test_it_names_a_rotated_key_after_the_key_it_replaces(superuser_client: Client, onboard: Onboard) -> None:
    result = onboard()
    assert result.api_key is not None
    tenant_id, old = result.profile.tenant_id, result.api_key.row
    rotate_url = url("tenant-key-rotate", tenant_id, old.api_key_id)
    day = utc_today()

    form = html(superuser_client.get(rotate_url))
    issued = html(superuser_client.post(rotate_url, {"grace": "1h", "token": form_value(form, "token")}))

    names = {f"Initial key (rotated {date})" for date in (day, utc_today())}  # two across midnight
    (replacement,) = central_repository(TenantApiKey).list(
        filters={"tenant_id": tenant_id, "is_active": True, "replaced_by_key_id__isnull": True}
    )
    assert replacement.name in names
    assert f"A new key named “<bdi>{FSI}{replacement.name}{PDI}</bdi>”" in form
    assert replacement.name in issued


def test_it_shows_a_replacement_once_when_its_rotation_is_posted_again(
    superuser_client: Client, onboard: Onboard
) -> None:
    result = onboard()
    assert result.api_key is not None
    tenant_id, old = result.profile.tenant_id, result.api_key.row
    rotate_url = url("tenant-key-rotate", tenant_id, old.api_key_id)
    posted = {"grace": "1h", "token": form_value(html(superuser_client.get(rotate_url)), "token")}

    issued = html(superuser_client.post(rotate_url, posted))
    reload = superuser_client.post(rotate_url, posted, follow=True)

    assert KEY_PATTERN.search(issued) is not None
    assert KEY_PATTERN.search(html(reload)) is None
    assert reload.redirect_chain[-1][0] == url("tenant-detail", tenant_id)
    assert any("shown only once" in message for message in messages_of(reload))
    assert len(central_repository(TenantApiKey).list(filters={"tenant_id": tenant_id})) == 2


def test_it_isolates_a_stored_key_name_in_the_heading_and_keeps_markup_out_of_the_tab_title(
    superuser_client: Client, onboard: Onboard
) -> None:
    # A name stored before bidi controls were refused: its override must not reorder the heading.
    tenant_id, key_id = key_named(onboard, "ops\u202eevil <b>")

    page = html(superuser_client.get(url("tenant-key-revoke", tenant_id, key_id)))

    assert f"(<bdi>{FSI}ops\u202eevil &lt;b&gt;{PDI}</bdi>)?</h1>" in page
    [tab_title] = re.findall(r"<title>(.*?)</title>", page, re.S)
    assert "<bdi>" not in tab_title
    # |striptags drops the <bdi>; the isolate characters inside it keep the override to the name.
    assert f"({FSI}ops\u202eevil &lt;b&gt;{PDI})?" in tab_title


def test_it_keeps_a_stored_stray_isolate_from_ending_the_isolation_of_a_key_name_in_the_tab_title(
    superuser_client: Client, onboard: Onboard
) -> None:
    # A PDI of the name's own would close a plain FSI early; an LRI left open would take in the rest.
    tenant_id, key_id = key_named(onboard, "ops\u2069\u202eevil\u2066")

    page = html(superuser_client.get(url("tenant-key-revoke", tenant_id, key_id)))

    [tab_title] = re.findall(r"<title>(.*?)</title>", page, re.S)
    depths = isolate_depths(tab_title)
    assert depths[tab_title.index("\u202e")] >= 1  # the override is inside the isolate
    assert set(depths[tab_title.index(")?") :]) == {0}  # and the text after the name is outside any


def test_it_shows_a_missing_keys_id_from_the_address_in_a_paragraph_of_its_own_direction(
    superuser_client: Client, onboard: Onboard
) -> None:
    tenant_id = onboard().profile.tenant_id
    right_to_left_id = "\u05de\u05e4\u05ea\u05d7"  # Hebrew letters, typed into the address

    response = superuser_client.get(url("tenant-key-revoke", tenant_id, right_to_left_id))

    assert response.status_code == 404
    assert f'<p dir="auto">API key &#x27;{right_to_left_id}&#x27; does not exist' in html(response)


def key_named(onboard: Onboard, name: str) -> tuple[str, str]:
    """A tenant whose initial key has `name`, written as a row stored before names were checked."""
    result = onboard()
    assert result.api_key is not None
    tenant_id, key_id = result.profile.tenant_id, result.api_key.row.api_key_id
    central_repository(TenantApiKey).update(key_id, {"name": name})
    return tenant_id, key_id


def isolate_depths(text: str) -> list[int]:
    """How many isolates enclose each character of `text`, paired as the Unicode bidi algorithm pairs
    them (a PDI closes the innermost open isolate; one with none open does nothing)."""
    depths, depth = [], 0
    for character in text:
        if character == PDI and depth:
            depth -= 1
        depths.append(depth)
        if character in "\u2066\u2067\u2068":
            depth += 1
    return depths
