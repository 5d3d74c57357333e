"""`manage.py run_periodic`: scheduler, runs' rows, orphan cleanup and usage rollover when due, no cron."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from tenants_app.log_context import command_log_context
from tenants_app.services.periodic import FAILED, RAN, TickReport, periodic_tick

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM or SIGINT sets `stop`; the loop ends after the job at hand. A second signal acts as usual."""
    previous = {signum: signal.getsignal(signum) for signum in _STOP_SIGNALS}

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()
        # A second Ctrl-C must still kill a job that hangs.
        for number, action in previous.items():
            signal.signal(number, action)

    for signum in _STOP_SIGNALS:
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, action in previous.items():
            signal.signal(signum, action)


class Command(BaseCommand):
    help = (
        "Run periodic work until stopped (SIGTERM or Ctrl-C): the pipeline scheduler every minute, the "
        "finished runs' rows into the tenants' datasets (by default a part of the tenants every 10 s, each "
        "tenant's every 5 minutes), orphan cleanup every 5 minutes and "
        "the usage rollover once per UTC day, right after midnight "
        "(PERIODIC_* settings). Safe on several hosts at once: the default cache (Redis across machines) "
        "lets one host run each period, and every job is idempotent anyway. --once runs one tick and exits, "
        "for Cloud Scheduler or a Kubernetes CronJob calling it every minute."
    )
    # Tests inject a clock, a sleep and a stop event through call_command; never command-line options.
    stealth_options = ("clock", "sleep", "stop_event")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="run one tick and exit (1 if a job failed)")
        parser.add_argument(
            "--tick-seconds",
            type=float,
            default=None,
            help=f"seconds between ticks (default: PERIODIC_TICK_SECONDS, {settings.PERIODIC_TICK_SECONDS})",
        )

    @command_log_context
    def handle(self, *args: Any, **options: Any) -> None:
        tick_seconds = options["tick_seconds"]
        if tick_seconds is None:
            tick_seconds = settings.PERIODIC_TICK_SECONDS
        if tick_seconds <= 0 or tick_seconds > 3600:
            raise CommandError("--tick-seconds must be more than 0 and at most 3600")
        clock: Callable[[], datetime] = options.get("clock") or timezone.now
        stop: threading.Event = options.get("stop_event") or threading.Event()
        # Waiting on the event rather than sleeping: a signal ends the wait at once.
        sleep: Callable[[float], object] = options.get("sleep") or stop.wait
        verbosity: int = options["verbosity"]
        if options["once"]:
            report = periodic_tick(now=clock())
            self._print(report, verbosity)
            if report.failed:
                raise CommandError(f"failed: {', '.join(outcome.name for outcome in report.failed)}")
            return
        if verbosity >= 1:
            self.stdout.write(f"Running periodic work every {tick_seconds:g} s; SIGTERM or Ctrl-C stops it.")
        with _stop_on_signals(stop):
            while not stop.is_set():
                self._print(periodic_tick(now=clock(), stopping=stop.is_set), verbosity)
                if not stop.is_set():
                    sleep(tick_seconds)
        if verbosity >= 1:
            self.stdout.write("Stopped.")

    def _print(self, report: TickReport, verbosity: int) -> None:
        for outcome in report.outcomes:
            if outcome.status == FAILED:
                # Always shown, whatever the verbosity: the log has the traceback.
                self.stderr.write(
                    f"{report.now:%Y-%m-%dT%H:%M:%SZ} {outcome.name}: failed ({outcome.summary})"
                )
            elif outcome.status == RAN and verbosity >= 1:
                self.stdout.write(f"{report.now:%Y-%m-%dT%H:%M:%SZ} {outcome.name}: {outcome.summary}")
            elif verbosity >= 2:
                self.stdout.write(
                    f"{report.now:%Y-%m-%dT%H:%M:%SZ} {outcome.name}: skipped, the period from "
                    f"{outcome.period_start:%H:%M:%S} ran or runs already"
                )
