"""The emulator killed in the middle of an onboarding: the same request, sent again, completes it."""

from __future__ import annotations

import threading
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
from tests.support.bigquery_proxy import Exchange, LoopbackProxy

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


class CrashAt(LoopbackProxy):
    """Kills the emulator when the `calls`-th request arrives, between two requests it serves.

    BigQuery applies a request whole or not at all; bqemulator killed inside a table creation keeps
    the table in DuckDB but not in its catalog, and every later creation of it fails with a 500. With
    onboarding's calls side by side the emulator is nearly always inside one, so the requests it is
    serving are answered first; the `calls`-th and every later one are dropped, as by a dead server.
    """

    def __init__(self, emulator: RestartableEmulator, calls: int) -> None:
        super().__init__(emulator.current.url)
        self.emulator = emulator
        self.calls = calls
        self.arrived = 0
        self.serving = 0
        self.crashed = False
        self._changed = threading.Condition()

    def handle(self, exchange: Exchange) -> None:
        with self._changed:
            self.arrived += 1
            if self.arrived >= self.calls and not self.crashed:
                self._changed.wait_for(lambda: self.serving == 0, timeout=30)
                self.emulator.kill()
                self.crashed = True
            if not self.crashed:
                self.serving += 1
        if self.crashed:
            exchange.drop()
            return
        try:
            exchange.relay()
        finally:
            with self._changed:
                self.serving -= 1
                self._changed.notify_all()


# An onboarding makes about 27 requests (preflight, rows, dataset and tables, views and grants, key and
# audit entry; with polls of its jobs): cut it early, midway and late.
@pytest.mark.parametrize("calls", [2, 10, 20])
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

    crash = CrashAt(emulator, calls).start()
    try:
        with override_settings(BIGQUERY_EMULATOR_HOST=crash.url):
            cut = client.post("/api/v1/tenants/onboard", body, format="json")
    finally:
        crash.stop()
    emulator.restart()
    done = client.post("/api/v1/tenants/onboard", body, format="json")

    assert crash.crashed
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
