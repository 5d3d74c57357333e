"""Fixtures of the backend's own tests: live `widgets` tables and their repositories."""

from __future__ import annotations

import uuid

import pytest
from google.cloud import bigquery

from bigquery_backend import provisioning
from bigquery_backend.client import BigQueryGateway, get_gateway
from bigquery_backend.repository import Repository
from bigquery_backend.schema import table_definition
from tests.bigquery_backend.widgets import Widget, WidgetTableFactory


def new_widget_table(gateway: BigQueryGateway, *rows: Widget) -> Repository[Widget]:
    """A `widgets` table in a dataset of its own, holding `rows`."""
    dataset = f"widgets_{uuid.uuid4().hex[:12]}"
    gateway.create_dataset(bigquery.Dataset(gateway.dataset_ref(dataset)))
    assert provisioning.create_table(gateway, dataset, table_definition(Widget))
    repository = Repository(Widget, dataset=dataset, gateway=gateway)
    if rows:
        repository.insert(*rows)
    return repository


@pytest.fixture
def widgets(gateway: BigQueryGateway, dataset: str) -> Repository[Widget]:
    """A repository over a freshly created, empty `widgets` table in this test's dataset."""
    assert provisioning.create_table(gateway, dataset, table_definition(Widget))
    return Repository(Widget, dataset=dataset, gateway=gateway)


@pytest.fixture(scope="module")
def shared_widget_table() -> WidgetTableFactory:
    """Builds a table once per module for tests that only read it (the emulator is already set up)."""

    def build(*rows: Widget) -> Repository[Widget]:
        return new_widget_table(get_gateway(), *rows)

    return build
