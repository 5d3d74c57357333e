"""Fixtures of the command tests: the portal served in this process, and a tenant with a table."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from pytest_django import DjangoDbBlocker
from pytest_django.live_server_helper import LiveServer

from bigquery_backend.client import BigQueryGateway
from bigquery_backend.identifiers import quote_table
from tenants_app.services.onboarding import tenant_onboard


@pytest.fixture(scope="module")
def live_server(django_db_setup: None, django_db_blocker: DjangoDbBlocker) -> Iterator[LiveServer]:
    """The portal in a thread of this process: it sees this module's emulator and central dataset."""
    with django_db_blocker.unblock():
        server = LiveServer("127.0.0.1:0")
    yield server
    server.stop()


@pytest.fixture
def tenant(gateway: BigQueryGateway) -> str:
    """An onboarded tenant whose dataset holds `orders` (one NULL customer, one repeated id)."""
    tenant_id = f"acme_{uuid.uuid4().hex[:12]}"
    tenant_onboard(
        tenant_id=tenant_id,
        company_name="Acme",
        admin_email="ops@acme.example",
        plan="STARTER",
        created_by="user:admin",
    )
    orders = quote_table(gateway.project, tenant_id, "orders")
    gateway.query(f"CREATE TABLE {orders} (id INT64, customer STRING, amount FLOAT64)")
    gateway.query(f"INSERT INTO {orders} VALUES (1, 'ann', 10.0), (2, 'bob', 2.5), (2, NULL, 7.5)")
    return tenant_id
