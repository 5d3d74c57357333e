"""`manage.py cleanup_orphaned_runs`: re-queue runs whose worker died, releasing their concurrent slots."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from bigquery_backend.exceptions import BigQueryError
from tenants_app.log_context import command_log_context
from tenants_app.services.errors import ServiceError
from tenants_app.services.run_queue import runs_reap_orphaned


class Command(BaseCommand):
    help = (
        "Re-queue RUNNING pipeline runs whose worker is gone (lease expired, or no heartbeat for the "
        "timeout), or mark them FAILED when their retries are used up; each run's concurrent slot is "
        "released once. Safe to run again or concurrently."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--timeout-minutes",
            type=int,
            default=None,
            help="a run without a lease is orphaned after this long without a heartbeat "
            f"(default: PIPELINE_ORPHAN_TIMEOUT_MINUTES, {settings.PIPELINE_ORPHAN_TIMEOUT_MINUTES})",
        )
        parser.add_argument("--limit", type=int, default=1000, help="at most this many runs per call")
        parser.add_argument("--dry-run", action="store_true", help="list what would be done; change nothing")

    @command_log_context
    def handle(self, *args: Any, **options: Any) -> None:
        minutes = options["timeout_minutes"]
        if minutes is not None and minutes < 1:
            raise CommandError("--timeout-minutes must be 1 or more")
        if not 1 <= options["limit"] <= 10_000:
            raise CommandError("--limit must be between 1 and 10000")
        verbosity: int = options["verbosity"]
        try:
            report = runs_reap_orphaned(
                timeout=None if minutes is None else timedelta(minutes=minutes),
                dry_run=options["dry_run"],
                limit=options["limit"],
            )
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        except BigQueryError as exc:
            raise CommandError(f"BigQuery: {exc}") from None
        if report.dry_run:
            if verbosity >= 1:
                self.stdout.write(f"Dry run: {len(report.found)} orphaned run(s); nothing was changed.")
            if verbosity >= 2:
                for run_id in report.found:
                    self.stdout.write(f"  {run_id}")
            return
        if verbosity >= 2:
            for run_id in report.requeued:
                self.stdout.write(f"  {run_id}: {self.style.SUCCESS('re-queued')}")
            for run_id in report.failed:
                self.stdout.write(f"  {run_id}: {self.style.WARNING('failed (no retries left)')}")
            skipped = sorted(set(report.found) - set(report.requeued) - set(report.failed))
            for run_id in skipped:
                self.stdout.write(f"  {run_id}: taken care of by another process meanwhile")
        if verbosity >= 1:
            if not report.found:
                self.stdout.write("No orphaned runs.")
            else:
                self.stdout.write(
                    f"{len(report.requeued)} run(s) re-queued, {len(report.failed)} failed, "
                    f"{report.released} concurrent slot(s) released."
                )
