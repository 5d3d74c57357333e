"""Bad rows and values are refused field by field before any statement reaches BigQuery."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from bigquery_backend.client import BigQueryGateway
from bigquery_backend.exceptions import InvalidInput
from bigquery_backend.repository import Repository
from tenants_app.models import TenantProfile
from tests.bigquery_backend.widgets import Widget, make_widget

NAIVE = datetime.datetime(2024, 5, 17, 12, 30)  # naive on purpose


def refused(
    gateway: BigQueryGateway, call: Callable[[], Any], exception: type[Exception] = InvalidInput
) -> Exception:
    """Run `call`, expect `exception`, and check that it issued no job and no API call."""
    with gateway.count_jobs() as counter, pytest.raises(exception) as caught:
        call()
    assert (counter.jobs, counter.api_calls) == (0, 0), counter.statements
    return caught.value


BAD_ROWS = [
    pytest.param({"name": None}, "name", id="missing-required-text"),
    pytest.param({"quantity": None}, "quantity", id="missing-required-int"),
    pytest.param({"created_at": None}, "created_at", id="missing-required-timestamp"),
    pytest.param({"name": ""}, "name", id="blank-required-text"),
    pytest.param({"name": "x" * 201}, "name", id="text-too-long"),
    pytest.param({"kind": "ROCKET"}, "kind", id="bad-choice"),
    pytest.param({"created_at": NAIVE}, "created_at", id="naive-datetime"),
    pytest.param({"touched_at": NAIVE}, "touched_at", id="naive-nullable-datetime"),
    pytest.param({"quantity": "many"}, "quantity", id="text-for-int"),
    pytest.param({"ratio": "half"}, "ratio", id="text-for-float"),
    pytest.param({"price": "cheap"}, "price", id="text-for-decimal"),
    pytest.param({"price": Decimal("1.0000000001")}, "price", id="decimal-too-precise"),
    pytest.param({"active": "maybe"}, "active", id="text-for-bool"),
    pytest.param({"due_on": "2024-02-30"}, "due_on", id="impossible-date"),
    pytest.param({"created_at": "yesterday"}, "created_at", id="text-for-timestamp"),
    pytest.param({"tags": "not-a-list"}, "tags", id="string-for-list"),
    pytest.param({"tags": ["ok", 3]}, "tags", id="non-string-in-list"),
    pytest.param({"attributes": {"when": object()}}, "attributes", id="json-unserializable"),
]


@pytest.mark.parametrize(("overrides", "field"), BAD_ROWS)
def test_it_refuses_a_bad_row_on_insert_before_any_job(
    gateway: BigQueryGateway, widgets: Repository[Widget], overrides: dict[str, Any], field: str
) -> None:
    error = refused(gateway, lambda: widgets.insert(make_widget("ok"), make_widget("bad", **overrides)))
    assert field in error.errors, error.errors


@pytest.mark.parametrize(("overrides", "field"), BAD_ROWS)
def test_it_refuses_a_bad_row_on_upsert_before_any_job(
    gateway: BigQueryGateway, widgets: Repository[Widget], overrides: dict[str, Any], field: str
) -> None:
    error = refused(gateway, lambda: widgets.upsert(make_widget("bad", **overrides)))
    assert field in error.errors, error.errors


def test_it_writes_nothing_when_one_row_of_a_batch_is_bad(widgets: Repository[Widget]) -> None:
    with pytest.raises(InvalidInput):
        widgets.insert(make_widget("good"), make_widget("bad", kind="ROCKET"))
    assert widgets.count() == 0


def test_it_names_every_bad_field_of_a_row(gateway: BigQueryGateway, widgets: Repository[Widget]) -> None:
    error = refused(gateway, lambda: widgets.insert(make_widget("bad", kind="ROCKET", quantity="x")))
    assert {"kind", "quantity"} <= set(error.errors)


@pytest.mark.parametrize(
    ("values", "field"),
    [
        pytest.param({"name": None}, "name", id="null-into-required"),
        pytest.param({"kind": "ROCKET"}, "kind", id="bad-choice"),
        pytest.param({"touched_at": NAIVE}, "touched_at", id="naive-datetime"),
        pytest.param({"quantity": "many"}, "quantity", id="wrong-type"),
        pytest.param({"tags": [1]}, "tags", id="bad-list"),
        pytest.param({"name": "x" * 201}, "name", id="too-long"),
        pytest.param({"colour": "red"}, "colour", id="unknown-field"),
    ],
)
def test_it_refuses_a_bad_update_value_before_any_job(
    gateway: BigQueryGateway, widgets: Repository[Widget], values: dict[str, Any], field: str
) -> None:
    error = refused(gateway, lambda: widgets.update("a", values))
    assert field in error.errors, error.errors


@pytest.mark.parametrize(
    ("filters", "field"),
    [
        pytest.param({"quantity__gt": "many"}, "quantity", id="wrong-type"),
        pytest.param({"created_at__lt": NAIVE}, "created_at", id="naive-datetime"),
        pytest.param({"due_on": "not a date"}, "due_on", id="bad-date"),
        pytest.param({"quantity__in": [1, "x"]}, "quantity", id="bad-item-in-set"),
        pytest.param({"colour": "red"}, "colour", id="unknown-field"),
    ],
)
def test_it_refuses_a_bad_filter_before_any_job(
    gateway: BigQueryGateway, widgets: Repository[Widget], filters: dict[str, Any], field: str
) -> None:
    error = refused(gateway, lambda: widgets.list(filters=filters))
    assert field in error.errors, error.errors


def test_it_refuses_a_row_of_another_model(gateway: BigQueryGateway, widgets: Repository[Widget]) -> None:
    stranger = TenantProfile(tenant_id="t1", company_name="Acme", admin_email="a@example.com",
                             tenant_dataset_id="t1", status="ACTIVE")  # fmt: skip
    refused(gateway, lambda: widgets.insert(stranger), TypeError)  # type: ignore[arg-type]


def test_it_leaves_the_table_untouched_after_refusals(widgets: Repository[Widget]) -> None:
    widgets.insert(make_widget("a"))
    for call in (
        lambda: widgets.insert(make_widget("b", created_at=NAIVE)),
        lambda: widgets.update("a", {"kind": "ROCKET"}),
        lambda: widgets.upsert(make_widget("a", quantity="x")),
    ):
        with pytest.raises(InvalidInput):
            call()
    assert [(w.widget_id, w.kind, w.quantity) for w in widgets.list()] == [("a", "GEAR", 1)]
