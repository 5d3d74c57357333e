"""`manage.py audit_genai_safety`: prove the tenant datasets that GenAI tools read hold no credentials."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from bigquery_backend.exceptions import NotFound
from tenants_app.log_context import command_log_context
from tenants_app.services.errors import DoesNotExist, ServiceUnavailable, ValidationFailed
from tenants_app.services.genai_safety import (
    DEFAULT_SAMPLE_ROWS,
    DEFAULT_WORKERS,
    MAX_SAMPLE_ROWS,
    MAX_WORKERS,
    genai_safety_scan,
    genai_safety_targets,
)
from tenants_app.services.genai_safety_report import Finding, GenaiSafetyReport, TableScan

# Exit statuses: 0 clean, 1 findings, 2 bad arguments (argparse uses 2 as well), 3 BigQuery unavailable.
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3


class Command(BaseCommand):
    help = (
        "Scan every tenant dataset (exposed to GenAI tools) for secrets and for tables or columns that are "
        "not declared: schemas, and a bounded sample of each table's values. Prints where each finding is "
        "(dataset, table, column, row key) and what kind it is, never the secret. Exit status: 0 clean, "
        "1 findings, 2 bad arguments, 3 BigQuery unavailable. Reads only; safe to run at any time."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--tenant", metavar="ID", action="append", dest="tenants", help="scan this tenant (repeatable)"
        )
        parser.add_argument(
            "--dataset",
            metavar="NAME",
            action="append",
            dest="datasets",
            help="scan this dataset, whether or not a profile names it (repeatable)",
        )
        parser.add_argument(
            "--all-datasets",
            action="store_true",
            help="every dataset of the project except the central one, not only those profiles name",
        )
        parser.add_argument(
            "--sample-rows",
            metavar="N",
            type=int,
            default=DEFAULT_SAMPLE_ROWS,
            help=f"rows read per table, newest first (1-{MAX_SAMPLE_ROWS}, default {DEFAULT_SAMPLE_ROWS})",
        )
        parser.add_argument(
            "--ignore",
            metavar="FINGERPRINT",
            action="append",
            dest="ignore",
            help="fingerprint of a reviewed false positive, as printed: listed, not failing (repeatable)",
        )
        parser.add_argument(
            "--workers",
            metavar="N",
            type=int,
            default=DEFAULT_WORKERS,
            help=f"tables read at a time (1-{MAX_WORKERS}, default {DEFAULT_WORKERS})",
        )
        parser.add_argument("--format", choices=("text", "json"), default="text", help="report format")
        parser.add_argument(
            "--dry-run", action="store_true", help="list the datasets that would be scanned; read no table"
        )

    @command_log_context
    def handle(self, *args: Any, **options: Any) -> None:
        as_json = options["format"] == "json"
        verbosity: int = options["verbosity"]
        selection = {
            "tenant_ids": options["tenants"],
            "datasets": options["datasets"],
            "all_datasets": options["all_datasets"],
        }
        try:
            if options["dry_run"]:
                targets = genai_safety_targets(**selection)
                self._print_targets(targets.datasets, targets.skipped, as_json=as_json)
                return
            on_table = self._print_table if verbosity >= 2 and not as_json else None
            report = genai_safety_scan(
                **selection,
                sample_rows=options["sample_rows"],
                ignore_fingerprints=options["ignore"] or (),
                workers=options["workers"],
                on_table=on_table,
            )
        except DoesNotExist as exc:
            raise CommandError(exc.message, returncode=EXIT_USAGE) from None
        except ValidationFailed as exc:
            details = "; ".join(f"{name}: {' '.join(reasons)}" for name, reasons in exc.errors.items())
            raise CommandError(f"{exc.message}: {details}", returncode=EXIT_USAGE) from None
        except ServiceUnavailable as exc:
            cause = f" ({exc.__cause__})" if exc.__cause__ else ""
            if isinstance(exc.__cause__, NotFound):
                # The profiles table itself is missing: a deployment that was never bootstrapped.
                message = f"the central dataset is not ready (has bootstrap_bigquery run?){cause}"
            else:
                message = f"BigQuery is unavailable, nothing was scanned{cause}"
            raise CommandError(message, returncode=EXIT_UNAVAILABLE) from None

        if as_json:
            self.stdout.write(json.dumps(report.as_dict(), indent=2, sort_keys=True))
        else:
            self._print_report(report, verbosity=verbosity)
        if not report.clean:
            raise CommandError(
                f"{len(report.findings) + report.findings_not_listed} finding(s) in tenant datasets: "
                "remove the secrets (and revoke or rotate them), or the undeclared tables and columns",
                returncode=EXIT_FINDINGS,
            )

    # --- output -------------------------------------------------------------------------------------
    def _print_targets(
        self, datasets: dict[str, str | None], skipped: dict[str, str], *, as_json: bool
    ) -> None:
        if as_json:
            self.stdout.write(
                json.dumps({"datasets": datasets, "skipped": skipped}, indent=2, sort_keys=True)
            )
            return
        self.stdout.write(f"Would scan {len(datasets)} dataset(s):")
        for dataset, tenant in datasets.items():
            owner = f"tenant {tenant}" if tenant else "no tenant profile names it"
            self.stdout.write(f"  {dataset} ({owner})")
        for dataset, reason in skipped.items():
            self.stdout.write(f"  {dataset}: skipped, {reason}")

    def _print_table(self, scan: TableScan, findings: list[Finding]) -> None:
        status = (
            self.style.ERROR(f"{scan.findings} finding(s)") if scan.findings else self.style.SUCCESS("clean")
        )
        declared = "" if scan.declared else ", not declared"
        self.stdout.write(
            f"  {scan.dataset}.{scan.table} ({scan.table_type.lower()}{declared}): "
            f"{scan.rows_sampled} row(s) sampled, {status}"
        )

    def _print_report(self, report: GenaiSafetyReport, *, verbosity: int) -> None:
        if verbosity >= 1:
            rows = sum(table.rows_sampled for table in report.tables)
            self.stdout.write(
                f"Scanned {len(report.datasets)} dataset(s), {len(report.tables)} table(s) and view(s), "
                f"{rows} row(s) (up to {report.sample_rows} per table)."
            )
            for dataset, reason in report.skipped.items():
                self.stdout.write(self.style.WARNING(f"  {dataset}: skipped, {reason}"))
        for finding in report.findings:
            self.stdout.write(self.style.ERROR(self._describe(finding)))
        if report.findings_not_listed:
            self.stdout.write(
                self.style.ERROR(
                    f"... and {report.findings_not_listed} more finding(s) of the same kind in the same "
                    "column(s), not listed"
                )
            )
        if report.ignored and verbosity >= 1:
            self.stdout.write(f"{len(report.ignored)} finding(s) ignored by fingerprint (--ignore):")
            for finding in report.ignored:
                self.stdout.write(f"  {self._describe(finding)}")
        if verbosity >= 1:
            if report.clean:
                self.stdout.write(
                    self.style.SUCCESS("Clean: no secrets and no undeclared tables or columns.")
                )
            else:
                counts = ", ".join(f"{kind} {count}" for kind, count in report.counts().items())
                self.stdout.write(f"{len(report.findings)} finding(s) listed: {counts}.")

    @staticmethod
    def _describe(finding: Finding) -> str:
        line = f"{finding.kind}: {finding.location()}: {finding.reason}"
        if finding.fingerprint:
            line += f" [fingerprint {finding.fingerprint}]"
        if finding.api_key_id:
            line += f"; it is API key {finding.api_key_id}: revoke or rotate it"
        return line
