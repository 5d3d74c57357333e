"""Portal login rate limiting: failures per username and address, refused without a password check."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import User
from django.core.cache import cache
from django.http import HttpRequest
from django.test import Client

from tenants_app.portal import login_throttle
from tests.support.people import TEST_PASSWORD

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/"
BACKEND = "tests.portal.test_login_throttle.CountingBackend"


class CountingBackend(ModelBackend):
    """Django's backend, counting the password checks it is asked for."""

    calls = 0

    def authenticate(self, request: HttpRequest | None, **credentials: Any) -> User | None:
        type(self).calls += 1
        return super().authenticate(request, **credentials)


@pytest.fixture(autouse=True)
def _limits(settings: Any) -> None:
    settings.LOGIN_RATE_LIMIT_ATTEMPTS = 3
    settings.LOGIN_RATE_LIMIT_WINDOW_SECONDS = 600
    settings.AUTHENTICATION_BACKENDS = [BACKEND]
    # A fast hasher: Django's default costs most of a second per login on a busy machine.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    CountingBackend.calls = 0


@pytest.fixture
def operator() -> User:
    return User.objects.create_user("operator", password=TEST_PASSWORD, is_staff=True)


def login(client: Client, username: str, password: str, address: str = "10.0.0.1") -> Any:
    return client.post(LOGIN, {"username": username, "password": password}, REMOTE_ADDR=address)


def fail(client: Client, times: int, username: str = "operator", address: str = "10.0.0.1") -> None:
    for _ in range(times):
        response = login(client, username, "wrong", address)
        assert response.status_code == 200
        assert "correct username and password" in response.content.decode()


def test_it_refuses_the_right_password_after_too_many_failures_without_checking_it(operator: User) -> None:
    client = Client()
    fail(client, 3)
    checks = CountingBackend.calls

    refused = login(client, "operator", TEST_PASSWORD)

    assert refused.status_code == 429
    assert "Too many failed logins" in refused.content.decode()
    assert int(refused["Retry-After"]) > 500
    assert CountingBackend.calls == checks  # the password was not looked at
    assert "_auth_user_id" not in client.session


def test_it_lets_the_user_in_below_the_limit_and_a_success_resets_the_count(operator: User) -> None:
    client = Client()
    fail(client, 2)

    assert login(client, "operator", TEST_PASSWORD).status_code == 302
    client.logout()
    fail(client, 2)

    assert login(client, "operator", TEST_PASSWORD).status_code == 302
    assert client.session["_auth_user_id"] == str(operator.pk)


def test_it_counts_per_username_and_address(operator: User) -> None:
    User.objects.create_user("auditor", password=TEST_PASSWORD, is_staff=True)
    client = Client()
    fail(client, 3, username="operator", address="10.0.0.1")

    assert login(client, "operator", TEST_PASSWORD, address="10.0.0.1").status_code == 429
    assert login(client, "operator", TEST_PASSWORD, address="10.0.0.2").status_code == 302
    client.logout()
    assert login(client, "auditor", TEST_PASSWORD, address="10.0.0.1").status_code == 302


def test_it_throttles_unknown_usernames_like_known_ones(db: None) -> None:
    client = Client()
    fail(client, 3, username="nobody")

    assert login(client, "nobody", "wrong").status_code == 429
    # Case variants share the count: they are no way around it.
    assert login(client, "NOBODY", "wrong").status_code == 429


def test_it_lets_the_user_in_again_once_the_window_is_over(operator: User) -> None:
    client = Client()
    fail(client, 3)
    assert login(client, "operator", TEST_PASSWORD).status_code == 429

    # The window ending is the counter expiring in the cache: expire it the way the cache would.
    key = login_throttle._key("operator", "10.0.0.1")
    cache.delete_many([key, f"{key}:since"])

    assert login(client, "operator", TEST_PASSWORD).status_code == 302


def test_it_logs_failed_and_refused_logins_without_the_password(
    operator: User, caplog: pytest.LogCaptureFixture
) -> None:
    client = Client()
    with caplog.at_level(logging.WARNING, logger="tenants_app.portal.login_throttle"):
        for _ in range(3):
            login(client, "operator", "hunter2-guess")
        login(client, "operator", TEST_PASSWORD + "-right-one")

    messages = [record.getMessage() for record in caplog.records]
    assert sum("login failed for 'operator' from 10.0.0.1" in m for m in messages) == 3
    assert any("refused without a check" in m for m in messages)
    assert not any("hunter2" in m or "right-one" in m for m in messages)


def test_it_counts_failures_in_the_cache_so_processes_sharing_it_share_the_count(operator: User) -> None:
    client = Client()
    fail(client, 2)

    assert login_throttle.retry_after("operator", "10.0.0.1") is None
    assert login_throttle.record_failure("operator", "10.0.0.1") == 3
    assert login(client, "operator", TEST_PASSWORD).status_code == 429
