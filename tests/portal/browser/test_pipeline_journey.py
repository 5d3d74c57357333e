"""A schedule made in the portal runs end to end, in a real browser: created with an every-minute cron,
its slot enqueued by the scheduler, claimed and run by the reference worker over the worker HTTP API,
QUEUED -> RUNNING -> SUCCEEDED on the run's page, with its step logs and DQ results from the tenant's
dataset. Time is moved, not waited for: the config's first slot is set to the current minute."""

from __future__ import annotations

import re
import threading
from typing import Any

from django.contrib.auth.models import User
from django.utils import timezone
from playwright.sync_api import Page, expect
from pytest_django.live_server_helper import LiveServer

from bigquery_backend.client import get_gateway
from bigquery_backend.identifiers import quote_table
from tenants_app.models import TenantPipelineConfig
from tenants_app.pipeline_execution import Execution, template_execute
from tenants_app.reference_worker import ReferenceWorker, WorkerApiClient
from tenants_app.repositories import central_repository
from tenants_app.services.api_keys import api_key_create
from tenants_app.services.scheduler import scheduler_run
from tests.portal.browser.conftest import Login, Onboard, Screenshot

EXPECTATIONS = (
    '[{"type": "not_null", "column": "customer"}, {"type": "row_count_between", "min": 1, "max": 10}]'
)
WAIT_SECONDS = 60


class HeldExecution:
    """The template as the worker runs it, held after the claim until the test has seen RUNNING."""

    def __init__(self) -> None:
        self.started, self.proceed = threading.Event(), threading.Event()

    def __call__(self, **kwargs: Any) -> Execution:
        self.started.set()
        self.proceed.wait(WAIT_SECONDS)
        return template_execute(**kwargs)


def test_it_runs_a_schedule_created_in_the_portal_through_the_reference_worker(
    page: Page,
    superuser: User,
    login: Login,
    onboard: Onboard,
    live_server: LiveServer,
    screenshot: Screenshot,
) -> None:
    tenant_id = onboard().profile.tenant_id
    gateway = get_gateway()
    orders = quote_table(gateway.project, tenant_id, "orders")
    gateway.query(f"CREATE TABLE {orders} (id INT64, customer STRING)")
    gateway.query(f"INSERT INTO {orders} VALUES (1, 'ann'), (2, 'bob')")
    login(page, superuser)

    # The tenant's page links to a new schedule; the template's parameters are fields of the form.
    page.goto(f"/admin/tenants/{tenant_id}/")
    page.locator("#new-pipeline").click()
    page.locator("#template-choices").get_by_role("link", name=re.compile("Data quality")).click()
    page.select_option("#id_provider", "GCP")
    page.fill("#id_domain", "sales")
    page.fill("#id_schedule_cron", "* * * * *")
    page.fill("#id_timezone", "UTC")
    page.fill("#id_param_target_table", "orders")
    page.fill("#id_param_expectations", EXPECTATIONS)
    screenshot(page, "40-pipeline-create")
    page.get_by_role("button", name="Create schedule").click()
    expect(page.locator(".messagelist .success")).to_contain_text("was created")
    config_id = re.search(r"/pipelines/([^/]+)/$", page.url).group(1)  # type: ignore[union-attr]

    # A minute passes: the config's first slot is now, and the scheduler (run_periodic's job) enqueues it.
    minute = timezone.now().replace(second=0, microsecond=0)
    central_repository(TenantPipelineConfig).update(config_id, {"next_run_time": minute})
    assert scheduler_run().runs_enqueued == 1
    page.reload()
    history = page.locator("#pipeline-history")
    expect(history.locator(".run-state")).to_have_text("Queued")
    history.get_by_role("link").first.click()
    expect(page.locator("#run-state")).to_have_text("Queued")
    expect(page.locator("#run-trigger")).to_contain_text("Schedule")

    # The reference worker claims it over HTTP with the tenant's key and holds it while we look.
    key = api_key_create(tenant_id=tenant_id, name="worker", scopes=["pipelines:execute"], created_by="test")
    held = HeldExecution()
    client = WorkerApiClient(base_url=live_server.url, worker_id="journey", api_key=key.plaintext)
    worker = ReferenceWorker(client=client, poll_seconds=0.5, execute=held)
    finished: list[int] = []
    thread = threading.Thread(target=lambda: finished.append(worker.run(until_idle=True)), daemon=True)
    thread.start()
    try:
        assert held.started.wait(WAIT_SECONDS), "the worker claimed nothing"
        page.reload()
        expect(page.locator("#run-state")).to_have_text("Running")
        screenshot(page, "41-pipeline-run-running")
    finally:
        held.proceed.set()
        thread.join(WAIT_SECONDS)
    assert finished == [1]

    page.reload()
    expect(page.locator("#run-state")).to_have_text("Succeeded")
    expect(page.locator("#run-steps tbody tr").first).to_contain_text("Succeeded")
    dq = page.locator("#run-dq tbody tr")
    expect(dq).to_have_count(1)
    expect(dq.first).to_contain_text("orders")
    expect(dq.first).to_contain_text("Pass")
    screenshot(page, "42-pipeline-run-succeeded")
