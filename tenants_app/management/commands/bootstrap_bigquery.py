"""`manage.py bootstrap_bigquery`: create and check the BigQuery datasets and tables."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from bigquery_backend.exceptions import BigQueryError, InvalidInput
from tenants_app.services.bootstrap import CREATED, DRIFT, EXISTS, UPDATED, TableReport, bigquery_bootstrap
from tenants_app.services.tenant_views import tenant_views_refresh, tenant_views_refresh_all


class Command(BaseCommand):
    help = (
        "Create the central tenants dataset and its tables (or, with --tenant, one tenant's dataset), "
        "check live schemas against the models, and report drift; bring existing tenants' views up to "
        "the current query. Safe to run again at any time."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", metavar="ID", help="create or check this tenant's dataset and tables")
        parser.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
        parser.add_argument("--json", action="store_true", help="print the plan or result as JSON")
        parser.add_argument(
            "--update-schema",
            action="store_true",
            help="add missing NULLABLE columns (never drops or retypes anything)",
        )
        parser.add_argument("--allow-drift", action="store_true", help="exit 0 even when schemas drifted")

    def handle(self, *args: Any, **options: Any) -> None:
        as_json: bool = options["json"]
        verbosity: int = options["verbosity"]
        on_table = None if as_json or verbosity < 1 else self._print_table
        try:
            report = bigquery_bootstrap(
                tenant_id=options["tenant"],
                dry_run=options["dry_run"],
                update_schema=options["update_schema"],
                on_table=on_table,
            )
            views = self._refresh_views(options["tenant"], dry_run=options["dry_run"])
        except InvalidInput as exc:
            raise CommandError(str(exc)) from None
        except BigQueryError as exc:
            raise CommandError(f"BigQuery: {exc}") from None

        if as_json:
            self.stdout.write(json.dumps({**report.as_dict(), "views": views}, indent=2, sort_keys=True))
        elif verbosity >= 1:
            prefix = "Dry run: would create" if report.dry_run else "Created"
            created = report.count(f"would_{CREATED}") if report.dry_run else report.count(CREATED)
            updated = report.count(f"would_{UPDATED}") if report.dry_run else report.count(UPDATED)
            datasets = ", ".join(
                f"{name} ({action.replace('_', ' ')})" for name, action in report.datasets.items()
            )
            self.stdout.write(
                f"{prefix} {created} table(s); {report.count(EXISTS)} already existed; "
                f"{updated} updated; {report.count(DRIFT)} with drift. Dataset: {datasets}."
            )
            verb = "Would replace" if report.dry_run else "Replaced"
            count = sum(len(names) for names in views.values())
            self.stdout.write(f"{verb} the query of {count} view(s) of {len(views)} tenant(s).")
            for tenant_id, names in views.items() if verbosity >= 2 else ():
                self.stdout.write(f"  {tenant_id}: {', '.join(names)}")
        if report.has_drift and not options["allow_drift"]:
            raise CommandError(
                "schema drift found (see above); --update-schema adds missing NULLABLE columns, "
                "--allow-drift accepts the rest"
            )

    @staticmethod
    def _refresh_views(tenant_id: str | None, *, dry_run: bool) -> dict[str, list[str]]:
        """Views whose query changed since their tenant was onboarded: tenant id -> view names."""
        if tenant_id is None:
            return tenant_views_refresh_all(dry_run=dry_run)
        names = tenant_views_refresh(tenant_id=tenant_id, dry_run=dry_run)
        return {tenant_id: names} if names else {}

    def _print_table(self, table: TableReport) -> None:
        name = f"{table.dataset}.{table.table}"
        if table.action == CREATED:
            self.stdout.write(f"  {name}: {self.style.SUCCESS('created')}")
        elif table.action == EXISTS:
            self.stdout.write(f"  {name}: already exists")
        elif table.action.startswith("would_"):
            self.stdout.write(f"  {name}: would be {table.action.removeprefix('would_')}")
        elif table.action == UPDATED:
            self.stdout.write(f"  {name}: {self.style.SUCCESS('added ' + ', '.join(table.added_columns))}")
        if table.drift:
            self.stdout.write(f"  {name}: {self.style.WARNING('drift')}")
            for drift in table.drift:
                self.stdout.write(f"    - {drift['message']}")
