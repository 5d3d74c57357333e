"""`manage.py schedule_pipelines`: enqueue every due slot of every active pipeline config, once."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.dateparse import parse_datetime

from tenants_app.log_context import command_log_context
from tenants_app.services.errors import ServiceError
from tenants_app.services.scheduler import SchedulerReport, scheduler_run


def _aware(value: str) -> datetime:
    parsed = parse_datetime(value)
    if parsed is None:
        raise CommandError(f"--now: {value!r} is not an ISO 8601 date and time")
    if parsed.tzinfo is None:
        raise CommandError(f"--now: {value!r} needs a time zone, e.g. 2026-03-29T01:00:00Z")
    return parsed.astimezone(UTC)


class Command(BaseCommand):
    help = (
        "Enqueue the due slots of every active pipeline config (runs and execution queue) and advance "
        "their next run time. Safe to run again at any time and from several hosts at once: each slot is "
        "enqueued exactly once. Run it every minute (cron, a systemd timer, a Kubernetes CronJob)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="print what is due; change nothing")
        parser.add_argument(
            "--now", metavar="ISO", help="act as if it were this time (with a time zone); default: now"
        )
        parser.add_argument(
            "--max-catch-up",
            type=int,
            metavar="N",
            help="enqueue at most N missed slots per config (default: SCHEDULER_MAX_CATCH_UP)",
        )
        parser.add_argument("--json", action="store_true", help="print the report as JSON")

    @command_log_context
    def handle(self, *args: Any, **options: Any) -> None:
        now = _aware(options["now"]) if options["now"] else None
        max_catch_up = options["max_catch_up"]
        if max_catch_up is not None and max_catch_up < 1:
            raise CommandError("--max-catch-up must be at least 1")
        try:
            report = scheduler_run(now=now, max_catch_up=max_catch_up, dry_run=options["dry_run"])
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        verbosity: int = options["verbosity"]
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict(), indent=2, sort_keys=True))
        elif verbosity >= 1:
            self._summary(report, verbosity)

    def _summary(self, report: SchedulerReport, verbosity: int) -> None:
        verb = "Would enqueue" if report.dry_run else "Enqueued"
        slots = report.slots_claimed if report.dry_run else report.runs_enqueued
        self.stdout.write(
            f"{verb} {slots} run(s) for {report.configs_claimed} config(s) at {report.now.isoformat()}; "
            f"{report.slots_skipped} missed slot(s) skipped beyond the catch-up limit of "
            f"{report.max_catch_up}; {report.slots_skipped_inactive} skipped for inactive tenants."
        )
        if report.configs_lost:
            self.stdout.write(f"  {report.configs_lost} config(s) were taken by another scheduler meanwhile.")
        if report.configs_recovered:
            self.stdout.write(
                f"  {report.configs_recovered} abandoned claim(s) of a stopped scheduler finished."
            )
        if report.configs_invalid:
            self.stdout.write(
                self.style.WARNING(
                    f"  {len(report.configs_invalid)} config(s) with an unusable schedule left alone: "
                    + ", ".join(report.configs_invalid)
                )
            )
        if verbosity >= 2:
            for config_id, slot in report.enqueued:
                self.stdout.write(f"  {config_id} {slot.isoformat()}")
