"""`manage.py roll_over_usage`: start a day's usage rows, expire ended trials, drop rows past retention."""

from __future__ import annotations

from datetime import date
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from bigquery_backend.exceptions import BigQueryError
from tenants_app.log_context import command_log_context
from tenants_app.services.errors import ServiceError
from tenants_app.services.usage_rows import MIN_RETENTION_DAYS, usage_roll_over


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"--date must be YYYY-MM-DD, not {value!r}") from None


class Command(BaseCommand):
    help = (
        "Start a UTC day's usage: mark trials past their end date EXPIRED, create the day's usage row "
        "for every working tenant whose subscription allows runs (month totals carried within a month, "
        "reset on the 1st; running slots counted from the execution queue), and delete usage rows older "
        "than the retention. "
        "A constant number of BigQuery statements whatever the number of tenants; safe to run twice or "
        "concurrently. Run it shortly after midnight UTC (runs create a missing row themselves anyway)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--date", type=_day, default=None, help="UTC day to start (default: today)")
        parser.add_argument(
            "--retention-days",
            type=int,
            default=None,
            help=f"delete rows older than this many days before --date (default: USAGE_RETENTION_DAYS, "
            f"{settings.USAGE_RETENTION_DAYS}; at least {MIN_RETENTION_DAYS})",
        )
        parser.add_argument("--dry-run", action="store_true", help="say what would be done; change nothing")

    @command_log_context
    def handle(self, *args: Any, **options: Any) -> None:
        verbosity: int = options["verbosity"]
        try:
            report = usage_roll_over(
                day=options["date"], retention_days=options["retention_days"], dry_run=options["dry_run"]
            )
        except ServiceError as exc:
            details = "; ".join(f"{name}: {' '.join(reasons)}" for name, reasons in exc.errors.items())
            raise CommandError(details or exc.message) from None
        except BigQueryError as exc:
            raise CommandError(f"BigQuery: {exc}") from None
        would = "would be " if report.dry_run else ""
        if verbosity >= 2:
            for tenant_id in report.trials_expired:
                self.stdout.write(f"  trial of {tenant_id}: {would}EXPIRED")
        if verbosity >= 1:
            prefix = "Dry run: " if report.dry_run else ""
            self.stdout.write(
                f"{prefix}usage of {report.day}: {len(report.trials_expired)} trial(s) {would}expired, "
                f"{report.rows_created} row(s) {would}created "
                f"({report.rows_for_day} {'existing' if report.dry_run else 'in all'}), "
                f"{report.rows_deleted} row(s) before {report.retention_cutoff} {would}deleted."
            )
        if report.dry_run and verbosity >= 1:
            self.stdout.write("Nothing was changed.")
