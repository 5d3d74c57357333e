"""Admin API tokens: issued once, stored hashed, refused when revoked, expired or not staff."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from tenants_app.api.authentication import AdminTokenAuthentication
from tenants_app.models import AdminApiToken
from tenants_app.services.admin_tokens import admin_token_create, admin_token_revoke, token_hash
from tenants_app.services.errors import DoesNotExist, ValidationFailed

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff() -> User:
    return User.objects.create_user("operator", password="x", is_staff=True)


def authenticate(header: str) -> tuple[User, AdminApiToken] | None:
    request = Request(APIRequestFactory().get("/api/v1/tenants", HTTP_AUTHORIZATION=header))
    return AdminTokenAuthentication().authenticate(request)


def test_it_stores_only_the_hash_and_a_display_prefix(staff: User) -> None:
    issued = admin_token_create(user=staff, name="terraform")

    stored = AdminApiToken.objects.get()
    assert stored.token_hash == token_hash(issued.plaintext)
    assert issued.plaintext.startswith(stored.token_prefix)
    assert issued.plaintext not in str(stored.__dict__)
    assert issued.plaintext not in repr(issued)


def test_it_authenticates_a_bearer_token_as_its_user(staff: User) -> None:
    issued = admin_token_create(user=staff, name="terraform")

    user, token = authenticate(f"Bearer {issued.plaintext}")  # type: ignore[misc]

    assert user == staff
    assert token.last_used_at is not None or AdminApiToken.objects.get().last_used_at is not None


def test_it_ignores_other_schemes_so_other_authenticators_can_try() -> None:
    assert authenticate("Basic dXNlcjpwYXNz") is None
    assert authenticate("Bearer something-else") is None


@pytest.mark.parametrize("spoil", ["revoke", "expire", "demote", "deactivate", "tamper"])
def test_it_refuses_a_token_that_is_no_longer_good(staff: User, spoil: str) -> None:
    issued = admin_token_create(user=staff, name="ci")
    plaintext = issued.plaintext
    if spoil == "revoke":
        admin_token_revoke(token_id=issued.token.pk)
    elif spoil == "expire":
        AdminApiToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    elif spoil == "demote":
        User.objects.filter(pk=staff.pk).update(is_staff=False)
    elif spoil == "deactivate":
        User.objects.filter(pk=staff.pk).update(is_active=False)
    else:
        plaintext = plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")

    with pytest.raises(AuthenticationFailed):
        authenticate(f"Bearer {plaintext}")


def test_it_issues_tokens_to_active_staff_only() -> None:
    customer = User.objects.create_user("customer", password="x")

    with pytest.raises(ValidationFailed) as caught:
        admin_token_create(user=customer, name="")

    assert set(caught.value.errors) == {"user", "name"}


def test_it_lets_a_user_revoke_only_their_own_token(staff: User) -> None:
    other = User.objects.create_user("other", password="x", is_staff=True)
    issued = admin_token_create(user=staff, name="ci")

    with pytest.raises(DoesNotExist):
        admin_token_revoke(token_id=issued.token.pk, user=other)
    admin_token_revoke(token_id=issued.token.pk, user=staff)

    assert AdminApiToken.objects.get().revoked_at is not None


def test_it_prints_a_new_token_once_from_the_command(staff: User) -> None:
    out, err = io.StringIO(), io.StringIO()

    call_command("create_admin_token", "--username", "operator", "--name", "ci", stdout=out, stderr=err)

    plaintext = out.getvalue().strip()
    assert AdminApiToken.objects.get().token_hash == token_hash(plaintext)
    assert "not shown again" in err.getvalue()
    with pytest.raises(CommandError, match="no user"):
        call_command("create_admin_token", "--username", "nobody", "--name", "ci")


def test_it_has_migrations_for_every_model_change() -> None:
    out = io.StringIO()

    call_command("makemigrations", "--check", "--dry-run", stdout=out)

    assert "No changes detected" in out.getvalue()


def test_it_lists_and_revokes_tokens_from_the_command(staff: User) -> None:
    issued = admin_token_create(user=staff, name="ci")
    listing = io.StringIO()

    call_command("revoke_admin_token", "--list", stdout=listing)
    call_command("revoke_admin_token", str(issued.token.pk), stdout=io.StringIO())

    assert f"{issued.token.pk}\toperator\tci\t{issued.token.token_prefix}" in listing.getvalue()
    assert issued.plaintext not in listing.getvalue()
    with pytest.raises(AuthenticationFailed):
        authenticate(f"Bearer {issued.plaintext}")
    with pytest.raises(CommandError, match="no live admin token"):
        call_command("revoke_admin_token", str(issued.token.pk))
