"""Probes and API documentation endpoints."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from bigquery_backend.emulator import free_port


@pytest.fixture
def local_kms(settings: Any, tmp_path: Any) -> None:
    settings.KMS_BACKEND = "local"
    settings.DATA_DIR = tmp_path


def test_it_reports_the_process_alive_without_touching_bigquery(client: Client, settings: Any) -> None:
    settings.BIGQUERY_EMULATOR_HOST = f"http://127.0.0.1:{free_port()}"

    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_it_is_ready_when_bigquery_and_kms_answer(client: Client, local_kms: None) -> None:
    response = client.get("/readyz")

    assert response.status_code == 200
    body = response.json()
    assert body["checks"]["bigquery"]["status"] == "ok"
    assert body["checks"]["kms"]["status"] == "ok"


def test_it_is_not_ready_when_bigquery_is_unreachable(client: Client, settings: Any, local_kms: None) -> None:
    settings.BIGQUERY_EMULATOR_HOST = f"http://127.0.0.1:{free_port()}"
    settings.BIGQUERY_RETRY_DEADLINE_SECONDS = 1.0
    settings.BIGQUERY_TIMEOUT_SECONDS = 1.0

    response = client.get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["bigquery"] == {"status": "unavailable", "error": "BackendUnavailable"}
    assert body["checks"]["kms"]["status"] == "ok"
    assert "127.0.0.1" not in response.content.decode()


def test_it_is_not_ready_when_cloud_kms_is_unreachable(client: Client, settings: Any) -> None:
    settings.KMS_BACKEND = "gcp"
    settings.KMS_KEY_NAME = "projects/p/locations/global/keyRings/r/cryptoKeys/k"
    settings.KMS_EMULATOR_HOST = f"http://127.0.0.1:{free_port()}"
    settings.KMS_TIMEOUT_SECONDS = 1.0

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["checks"]["kms"]["status"] == "unavailable"


def test_it_serves_the_openapi_schema(client: Client) -> None:
    response = client.get("/api/schema/", HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    assert response.json()["openapi"].startswith("3.")


def test_it_serves_interactive_docs_from_local_assets_only(client: Client) -> None:
    response = client.get("/api/docs/")

    assert response.status_code == 200
    html = response.content.decode()
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources, "the docs page loads no assets"
    assert all(not source.startswith(("http:", "https:", "//")) for source in sources), sources


def test_it_generates_a_valid_schema_without_warnings(tmp_path: Any) -> None:
    from django.core.management import call_command

    target = tmp_path / "schema.yaml"

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))

    text = target.read_text()
    assert "X-API-Key" in text
    assert "/api/v1/me/keys/{api_key_id}/rotate" in text
