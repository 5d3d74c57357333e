"""Create and check the central dataset, or one tenant's dataset, from the model declarations."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from bigquery_backend import provisioning
from bigquery_backend.client import BigQueryGateway, get_gateway
from bigquery_backend.models import BigQueryModel
from bigquery_backend.schema import table_definition
from tenants_app.models import CENTRAL_MODELS, TENANT_MODELS
from tenants_app.services.datasets import (
    CENTRAL_DATASET_LABELS,
    central_dataset,
    tenant_dataset,
    tenant_dataset_labels,
)
from tenants_app.task_graph import Task, run_tasks

# Table outcomes. A dry run says what it would do with the same words and `would_` in front.
CREATED = "created"
EXISTS = "exists"
DRIFT = "drift"
UPDATED = "updated"


@dataclass
class TableReport:
    """What bootstrap found and did for one table."""

    dataset: str
    table: str
    action: str
    partitioning: str | None
    clustering: list[str]
    columns: list[dict[str, str]]
    drift: list[dict[str, str | None]] = field(default_factory=list)
    added_columns: list[str] = field(default_factory=list)


@dataclass
class BootstrapReport:
    """The whole run: datasets, tables, and what is left to fix."""

    dry_run: bool
    datasets: dict[str, str] = field(default_factory=dict)
    tables: list[TableReport] = field(default_factory=list)

    def count(self, action: str) -> int:
        return sum(1 for table in self.tables if table.action == action)

    @property
    def has_drift(self) -> bool:
        return any(table.drift for table in self.tables)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "datasets": self.datasets,
            "tables": [asdict(table) for table in self.tables],
            "summary": {
                action: self.count(action)
                for action in (CREATED, EXISTS, DRIFT, UPDATED, f"would_{CREATED}", f"would_{UPDATED}")
            },
        }


def bigquery_bootstrap(
    *,
    tenant_id: str | None = None,
    dry_run: bool = False,
    update_schema: bool = False,
    on_table: Callable[[TableReport], None] | None = None,
    gateway: BigQueryGateway | None = None,
    max_workers: int = 1,
) -> BootstrapReport:
    """Create what is missing, report drift, and add missing NULLABLE columns when asked.

    `max_workers` > 1 checks and creates the tables side by side, that many at a time.
    """
    gateway = gateway or get_gateway()
    if tenant_id is None:
        dataset_id = central_dataset()
        labels = CENTRAL_DATASET_LABELS
        description = "Convergence tenant management: protected, no GenAI access"
        models: Sequence[type[BigQueryModel]] = CENTRAL_MODELS
    else:
        dataset_id = tenant_dataset(tenant_id)
        labels = tenant_dataset_labels(tenant_id)
        description = f"Operational data of tenant {tenant_id}: no credentials, safe for GenAI tools"
        models = TENANT_MODELS

    report = BootstrapReport(dry_run=dry_run)
    dataset_action = provisioning.ensure_dataset(
        gateway, dataset_id, labels=labels, description=description, dry_run=dry_run
    )
    report.datasets[dataset_id] = dataset_action.replace(" ", "_")
    dataset_missing = dataset_action == "would create"

    def bootstrap_table(model: type[BigQueryModel]) -> TableReport:
        return _bootstrap_table(
            gateway,
            dataset_id,
            model,
            dry_run=dry_run,
            update_schema=update_schema,
            dataset_missing=dataset_missing,
        )

    # One after another by default (each reported as it is done, the first failure stops the rest).
    tables: Iterable[TableReport] = (bootstrap_table(model) for model in models)
    if max_workers > 1:
        # The tables are independent: onboarding creates a tenant's side by side (tenants_app/task_graph.py).
        tasks = {table_definition(model).name: Task(partial(bootstrap_table, model)) for model in models}
        tables = run_tasks(tasks, max_workers=max_workers, thread_name_prefix="bootstrap").values()
    for table_report in tables:
        report.tables.append(table_report)
        if on_table is not None:
            on_table(table_report)
    return report


def _bootstrap_table(
    gateway: BigQueryGateway,
    dataset_id: str,
    model: type[BigQueryModel],
    *,
    dry_run: bool,
    update_schema: bool,
    dataset_missing: bool,
) -> TableReport:
    definition = table_definition(model)
    spec = definition.spec
    report = TableReport(
        dataset=dataset_id,
        table=definition.name,
        action=EXISTS,
        partitioning=f"{spec.partition_type}({spec.partition_field})" if spec.partition_field else None,
        clustering=list(spec.clustering),
        columns=[{"name": c.name, "type": c.field_type, "mode": c.mode} for c in definition.columns],
    )
    live = None if dataset_missing else provisioning.live_table(gateway, dataset_id, definition)
    if live is None:
        if dry_run:
            report.action = f"would_{CREATED}"
        else:
            report.action = CREATED if provisioning.create_table(gateway, dataset_id, definition) else EXISTS
        return report

    drift = provisioning.compare(definition, live)
    fixable = [d for d in drift if d.fixable]
    if update_schema and fixable:
        if dry_run:
            report.action = f"would_{UPDATED}"
        else:
            provisioning.add_columns(
                gateway, dataset_id, definition, [definition.column(d.column) for d in fixable]
            )
            report.action = UPDATED
        report.added_columns = [d.column for d in fixable]
        drift = [d for d in drift if not d.fixable]
    if drift:
        report.action = DRIFT
    report.drift = [{**asdict(d), "message": d.describe()} for d in drift]
    return report
