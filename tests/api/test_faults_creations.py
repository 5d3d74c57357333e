"""Creations retried after a 503 whose INSERT landed: one key, one config, one audit entry each.

BigQuery takes the INSERT and the answer is lost (LOST fault, tests/support/bigquery_faults.py): the
caller gets a 503 and sends the same request with the same Idempotency-Key. The row's id is derived
from that request (`retries.stable_id`), so the retry finds the row instead of creating a second one.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.core.cache import cache
from django.test import override_settings
from rest_framework.test import APIClient

from bigquery_backend.emulator import EmulatorProcess
from tenants_app.models import AuditLogEntry, TenantApiKey, TenantPipelineConfig
from tenants_app.repositories import central_repository
from tenants_app.services.api_key_rotation import api_key_rotate
from tenants_app.services.api_key_verification import _cache_key, api_key_verify, hash_api_key
from tenants_app.services.api_keys import api_key_create
from tenants_app.services.errors import ValidationFailed
from tests.api.test_faults_bigquery import SLOW_SECONDS, new_tenants, short_bounds, writes_to
from tests.support.bigquery_faults import BigQueryFaultProxy, Fault
from tests.support.people import create_superuser

pytestmark = pytest.mark.django_db

HOUR = timedelta(hours=1)
PIPELINE = {
    "provider": "GCP",
    "domain": "billing",
    "pipeline_template": "sql_transform",
    "schedule_cron": "30 2 * * *",
    "timezone": "Europe/Berlin",
    "parameters": {"source_table": "raw_costs", "destination_table": "daily_costs"},
}


@pytest.fixture(scope="module")
def proxy(bigquery_emulator: EmulatorProcess) -> Iterator[BigQueryFaultProxy]:
    proxy = BigQueryFaultProxy(bigquery_emulator.url, slow_seconds=SLOW_SECONDS).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module", autouse=True)
def _central(central: str) -> str:
    return central


@pytest.fixture
def through_proxy(proxy: BigQueryFaultProxy) -> Iterator[BigQueryFaultProxy]:
    proxy.heal()
    with override_settings(BIGQUERY_EMULATOR_HOST=proxy.url):
        yield proxy
    proxy.heal()


@pytest.fixture
def admin(db: None) -> APIClient:
    client = APIClient()
    client.force_login(create_superuser())
    return client


def lost_then_retried(proxy: BigQueryFaultProxy, table: str, send: Any) -> tuple[Any, Any]:
    """`send()` with the INSERT into `table` landing and its answer lost; then `send()` again, healed."""
    proxy.fail(Fault.LOST, match=writes_to(table))
    with short_bounds():
        lost = send()
    fired = proxy.fired
    proxy.heal()
    assert fired, "the fault never fired"
    return lost, send()


def audit_entries(tenant_id: str, action: str, target_id: str) -> int:
    filters = {"tenant_id": tenant_id, "action": action, "target_id": target_id}
    return central_repository(AuditLogEntry).count(filters=filters)


def test_it_creates_one_key_when_the_answer_of_its_insert_was_lost(
    through_proxy: BigQueryFaultProxy, admin: APIClient
) -> None:
    tenant_id = new_tenants(1)[0]

    def create() -> Any:
        return admin.post(
            f"/api/v1/tenants/{tenant_id}/keys",
            {"name": "ci", "scopes": ["tenant:read"]},
            format="json",
            HTTP_IDEMPOTENCY_KEY="create-key-1",
        )

    lost, again = lost_then_retried(through_proxy, "tenant_api_keys", create)

    assert lost.status_code == 503, lost.json()
    assert again.status_code == 201, again.json()
    plaintext, api_key_id = again.json()["api_key"], again.json()["key"]["api_key_id"]
    me = APIClient().get("/api/v1/me", HTTP_X_API_KEY=plaintext)
    assert me.status_code == 200, me.json()
    rows = central_repository(TenantApiKey).list(filters={"tenant_id": tenant_id, "name": "ci"})
    assert [(row.api_key_id, row.api_key_hash) for row in rows] == [(api_key_id, hash_api_key(plaintext))]
    assert audit_entries(tenant_id, "api_key.create", api_key_id) == 1


def test_it_shows_a_lost_key_to_no_one_but_the_retry_of_its_own_request(
    through_proxy: BigQueryFaultProxy, admin: APIClient
) -> None:
    tenant_id = new_tenants(1)[0]
    url = f"/api/v1/tenants/{tenant_id}/keys"
    body = {"name": "ci", "scopes": ["tenant:read"]}

    through_proxy.fail(Fault.LOST, match=writes_to("tenant_api_keys"))
    with short_bounds():
        lost = admin.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY="create-key-2")
    through_proxy.heal()
    other_key = admin.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY="create-key-3")
    without_key = admin.post(url, body, format="json")

    assert lost.status_code == 503
    # Not the same request (another Idempotency-Key, or none): a new key, the lost one stays unseen.
    assert other_key.status_code == 201, other_key.json()
    assert without_key.status_code == 201, without_key.json()
    ids = {row.api_key_id for row in central_repository(TenantApiKey).list(filters={"tenant_id": tenant_id})}
    assert len(ids) == 3


def test_it_creates_one_pipeline_config_when_the_answer_of_its_insert_was_lost(
    through_proxy: BigQueryFaultProxy, admin: APIClient
) -> None:
    tenant_id = new_tenants(1)[0]

    def create() -> Any:
        return admin.post(
            f"/api/v1/tenants/{tenant_id}/pipelines", PIPELINE, format="json", HTTP_IDEMPOTENCY_KEY="config-1"
        )

    lost, again = lost_then_retried(through_proxy, "tenant_pipeline_configs", create)
    replayed = create()

    assert lost.status_code == 503, lost.json()
    assert again.status_code == 201, again.json()
    assert replayed.json() == again.json()
    rows = central_repository(TenantPipelineConfig).list(filters={"tenant_id": tenant_id})
    assert [row.config_id for row in rows] == [again.json()["config_id"]]
    assert audit_entries(tenant_id, "pipeline_config.create", rows[0].config_id) == 1


def test_it_clears_the_old_keys_cached_verification_when_a_rotation_is_found_done() -> None:
    tenant_id = new_tenants(1)[0]
    old = api_key_create(tenant_id=tenant_id, name="ci", scopes=["tenant:read"], created_by="user:1")
    api_key_rotate(tenant_id=tenant_id, api_key_id=old.row.api_key_id, grace=HOUR, rotated_by="user:1")
    cached = _cache_key(old.row.api_key_hash)

    # Cached again during its grace hour; a retry that finds the rotation done (lost answer) drops it.
    api_key_verify(key=old.plaintext)
    assert cache.get(cached) is not None
    api_key_rotate(
        tenant_id=tenant_id, api_key_id=old.row.api_key_id, grace=HOUR, rotated_by="user:1", resume=True
    )
    assert cache.get(cached) is None

    # And so does a refusal "already rotated".
    api_key_verify(key=old.plaintext)
    with pytest.raises(ValidationFailed):
        api_key_rotate(tenant_id=tenant_id, api_key_id=old.row.api_key_id, grace=HOUR, rotated_by="user:2")
    assert cache.get(cached) is None
