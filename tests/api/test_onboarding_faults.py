"""The emulator killed in the middle of an onboarding: the same request, sent again, completes it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import override_settings
from rest_framework.test import APIClient

from bigquery_backend.client import get_gateway
from bigquery_backend.emulator import EmulatorProcess
from tenants_app.models import TenantApiKey, TenantProfile, TenantSubscription, TenantUsageQuota
from tenants_app.repositories import central_repository
from tenants_app.services.bootstrap import bigquery_bootstrap

pytestmark = pytest.mark.django_db


class RestartableEmulator:
    """A persistent emulator of this test's own, which the test can kill and start again on the same port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.current = self._new(port=None)

    def _new(self, port: int | None) -> EmulatorProcess:
        return EmulatorProcess(
            home=self.root / "home", port=port, data_dir=self.root / "storage", log_path=self.root / "log"
        )

    def start(self) -> None:
        self.current.start()

    def kill(self) -> None:
        assert self.current.process is not None
        self.current.process.kill()  # SIGKILL: no clean shutdown, as in a crash
        self.current.process.wait(timeout=10)

    def restart(self) -> None:
        self.current = self._new(port=self.current.port)
        self.current.start()


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[RestartableEmulator]:
    emulator = RestartableEmulator(tmp_path)
    emulator.start()
    with override_settings(
        BIGQUERY_EMULATOR_HOST=emulator.current.url,
        BIGQUERY_PROJECT=emulator.current.project,
        BIGQUERY_RETRY_DEADLINE_SECONDS=1.0,
        BIGQUERY_TIMEOUT_SECONDS=5.0,
        TENANTS_DATASET="tenants",
    ):
        bigquery_bootstrap()
        yield emulator
    emulator.current.stop()


def kill_after(emulator: RestartableEmulator, calls: int) -> threading.Thread:
    """Kill the emulator once the onboarding has issued `calls` BigQuery jobs and API calls."""
    gateway = get_gateway()
    started = threading.Event()

    def watch() -> None:
        with gateway.count_jobs() as counter:
            started.set()
            deadline = time.monotonic() + 30
            while counter.jobs + counter.api_calls < calls and time.monotonic() < deadline:
                time.sleep(0.0005)
            emulator.kill()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    started.wait()
    return thread


# An onboarding issues about 19 BigQuery calls (6 jobs, 13 metadata calls): cut it early, midway and late.
@pytest.mark.parametrize("calls", [2, 8, 15])
def test_it_completes_an_onboarding_after_the_emulator_was_killed_midway(
    emulator: RestartableEmulator, calls: int
) -> None:
    client = APIClient()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "x"))
    body = {
        "tenant_id": f"crash_{calls}",
        "company_name": "Crash Ltd",
        "admin_email": "ops@crash.example",
        "plan": "STARTER",
    }

    watcher = kill_after(emulator, calls)
    cut = client.post("/api/v1/tenants/onboard", body, format="json")
    watcher.join(timeout=30)
    emulator.restart()
    done = client.post("/api/v1/tenants/onboard", body, format="json")

    assert cut.status_code == 503
    assert cut.json()["error"]["code"] == "unavailable"
    assert done.status_code == 201, done.json()
    tenant_id = body["tenant_id"]
    for model in (TenantProfile, TenantSubscription, TenantUsageQuota, TenantApiKey):
        assert central_repository(model).count(filters={"tenant_id": tenant_id}) == 1, model.__name__
    tables = sorted(get_gateway().list_table_ids(tenant_id))
    assert tables == sorted(
        [
            "tenant_pipeline_runs",
            "tenant_step_logs",
            "tenant_dq_results",
            "tenant_pipeline_configs",
            "tenant_scheduled_pipeline_runs",
        ]
    )
    me = APIClient()
    me.credentials(HTTP_X_API_KEY=done.json()["api_key"])
    assert me.get("/api/v1/me").json()["tenant"]["tenant_id"] == tenant_id
