"""Two real server processes on one machine share the embedded cache.

What one process learns (a revocation, a rotation, a suspension, an offboarding, a counted API call, a
failed login) must hold in the other at once: with a per-process cache, revoked keys kept working on
the other process for API_KEY_CACHE_SECONDS, and every limit was multiplied by the number of workers.
Each change is made through server A and checked with the very next request to server B, whose cache
already held the key: no wait at all, where the issue allows 1 s.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator

import pytest
import requests

from bigquery_backend.emulator import EmulatorProcess
from tests.support.servers import PortalServer, ServerEnvironment

LOGIN_ATTEMPTS = 3
Servers = tuple[PortalServer, PortalServer]


@pytest.fixture(scope="module")
def machine(
    bigquery_emulator: EmulatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> ServerEnvironment:
    environment = ServerEnvironment(
        data_dir=tmp_path_factory.mktemp("shared-machine"),
        emulator_url=bigquery_emulator.url,
        project=bigquery_emulator.project,
        extra={"LOGIN_RATE_LIMIT_ATTEMPTS": str(LOGIN_ATTEMPTS), "LOGIN_RATE_LIMIT_WINDOW_SECONDS": "600"},
    )
    environment.extra["TEST_STAFF_TOKEN"] = environment.prepare()
    return environment


@pytest.fixture(scope="module")
def servers(machine: ServerEnvironment) -> Iterator[tuple[PortalServer, PortalServer]]:
    a, b = PortalServer(machine), PortalServer(machine)
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        a.stop()
        b.stop()


@pytest.fixture
def staff(machine: ServerEnvironment) -> dict[str, str]:
    return {"Authorization": f"Bearer {machine.extra['TEST_STAFF_TOKEN']}"}


def onboard(server: PortalServer, staff: dict[str, str]) -> tuple[str, str]:
    """A new tenant through `server`; returns its id and its initial key."""
    tenant_id = f"shared_{uuid.uuid4().hex[:10]}"
    answer = requests.post(
        f"{server.url}/api/v1/tenants/onboard",
        json={
            "tenant_id": tenant_id,
            "company_name": "Shared Cache Ltd",
            "admin_email": "ops@example.com",
            "plan": "PROFESSIONAL",
        },
        headers=staff,
        timeout=120,
    )
    assert answer.status_code == 201, answer.text
    return tenant_id, answer.json()["api_key"]


def new_key(server: PortalServer, staff: dict[str, str], tenant_id: str) -> tuple[str, str]:
    answer = requests.post(
        f"{server.url}/api/v1/tenants/{tenant_id}/keys",
        json={"name": "second", "scopes": ["tenant:read"]},
        headers=staff,
        timeout=60,
    )
    assert answer.status_code == 201, answer.text
    return answer.json()["key"]["api_key_id"], answer.json()["api_key"]


def me(server: PortalServer, key: str) -> int:
    return requests.get(f"{server.url}/api/v1/me", headers={"X-API-Key": key}, timeout=30).status_code


def warmed(servers: tuple[PortalServer, PortalServer], key: str) -> None:
    """Both processes have verified `key`: B answers from its cache, not from BigQuery."""
    assert [me(server, key) for server in servers] == [200, 200]


# Each change through server A: (path under /api/v1/tenants/{tenant}/, its body, its status, and the
# status the changed key then gets). Revocation and rotation act on a second key of the tenant.
CHANGES = {
    "revoke": ("keys/{key_id}/revoke", {"reason": "leaked"}, 200, 401),
    "rotate": ("keys/{key_id}/rotate", {"grace": "0"}, 201, 401),
    "suspend": ("suspend", None, 200, 403),
    "offboard": ("offboard", {"confirm_tenant_id": "{tenant_id}"}, 200, 401),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_it_refuses_a_changed_key_in_the_other_process_at_once(
    servers: Servers, staff: dict[str, str], change: str
) -> None:
    a, b = servers
    tenant_id, key = onboard(a, staff)
    key_id = None
    if change in {"revoke", "rotate"}:
        key_id, key = new_key(a, staff, tenant_id)
    warmed(servers, key)
    path, body, status, refused = CHANGES[change]
    if body is not None:
        body = {name: value.format(tenant_id=tenant_id) for name, value in body.items()}

    answer = requests.post(
        f"{a.url}/api/v1/tenants/{tenant_id}/{path.format(key_id=key_id)}",
        json=body,
        headers=staff,
        timeout=60,
    )

    assert answer.status_code == status, answer.text
    assert me(b, key) == refused  # the very next request to the other process, no wait at all
    assert me(a, key) == refused
    if change == "rotate":
        assert me(b, answer.json()["api_key"]) == 200


def test_it_counts_api_calls_against_one_limit_across_processes(
    servers: Servers, staff: dict[str, str]
) -> None:
    a, b = servers
    limit = 6
    # Fixed windows: calls that straddle a minute boundary start a new count, so such an attempt is
    # repeated once, with a fresh tenant (whose counts start at zero within one minute).
    for _ in range(2):
        tenant_id, key = onboard(a, staff)
        patched = requests.patch(
            f"{a.url}/api/v1/tenants/{tenant_id}/subscription",
            json={"api_calls_per_minute": limit, "api_calls_per_hour": 10_000},
            headers=staff,
            timeout=60,
        )
        assert patched.status_code == 200, patched.text
        minute = int(time.time() // 60)
        statuses = [me((a, b)[call % 2], key) for call in range(limit + 2)]
        if int(time.time() // 60) == minute:
            break

    # Per process, each would have allowed `limit` calls: 2 x limit in all.
    assert statuses.count(200) <= limit
    assert statuses[-2:] == [429, 429]


def test_it_counts_failed_logins_across_processes(servers: Servers) -> None:
    username = f"guesser-{uuid.uuid4().hex[:8]}"

    answers = [login(server, username, "wrong-password") for server in servers * LOGIN_ATTEMPTS]

    # Each process alone would still be under its limit (LOGIN_ATTEMPTS failures each); together they
    # reach it, and whichever process is asked next refuses without checking the password.
    assert answers[:LOGIN_ATTEMPTS] == [200] * LOGIN_ATTEMPTS  # the form again, with an error
    assert set(answers[LOGIN_ATTEMPTS:]) == {429}


def login(server: PortalServer, username: str, password: str) -> int:
    session = requests.Session()
    page = session.get(f"{server.url}/admin/login/", timeout=30)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token is not None, page.text[:500]
    answer = session.post(
        f"{server.url}/admin/login/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": token.group(1)},
        headers={"Referer": f"{server.url}/admin/login/"},
        allow_redirects=False,
        timeout=30,
    )
    return answer.status_code
