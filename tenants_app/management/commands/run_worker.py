"""`manage.py run_worker`: the reference pipeline worker, a client of the worker HTTP API."""

from __future__ import annotations

import os
import signal
import socket
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tenants_app.log_context import command_log_context
from tenants_app.reference_worker import (
    DEFAULT_LEASE_SECONDS,
    ReferenceWorker,
    WorkerApiClient,
    WorkerApiError,
)

TOKEN_ENV, API_KEY_ENV = "WORKER_TOKEN", "WORKER_API_KEY"


class Command(BaseCommand):
    help = (
        "Claim pipeline runs over the worker API and run their templates against the tenants' datasets. "
        f"Credential: a worker token ({TOKEN_ENV} or --token-file) or a tenant key with pipelines:execute "
        f"({API_KEY_ENV}); never on the command line, where other users could read it. SIGTERM or Ctrl-C "
        "finishes the run in hand and claims no more."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="the portal's base URL")
        parser.add_argument("--worker-id", default=f"{socket.gethostname()}-{os.getpid()}"[:200])
        parser.add_argument("--token-file", type=Path, help="a file holding the worker token")
        parser.add_argument(
            "--tenant", default=None, help="worker tokens only: claim this tenant's runs only"
        )
        parser.add_argument("--lease-seconds", type=int, default=DEFAULT_LEASE_SECONDS)
        parser.add_argument("--poll-seconds", type=float, default=5.0, help="wait when nothing is queued")
        parser.add_argument("--until-idle", action="store_true", help="exit once nothing is left to claim")

    @command_log_context
    def handle(self, *args: Any, **options: Any) -> None:
        client = WorkerApiClient(
            base_url=options["url"], worker_id=options["worker_id"], **_credential(options)
        )
        worker = ReferenceWorker(
            client=client,
            lease_seconds=options["lease_seconds"],
            poll_seconds=options["poll_seconds"],
            tenant_id=options["tenant"],
        )
        restore = stop_on_signals(worker.stop)
        try:
            finished = worker.run(until_idle=options["until_idle"])
        except WorkerApiError as exc:
            raise CommandError(str(exc)) from None
        finally:
            restore()
        if options["verbosity"] >= 1:
            self.stdout.write(f"Worker {options['worker_id']} stopped after {finished} run(s).")


def stop_on_signals(stop: threading.Event) -> Any:
    """SIGTERM and SIGINT set `stop` (the run in hand finishes); returns what puts the old handlers back."""

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {number: signal.signal(number, handler) for number in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for number, old in previous.items():
            signal.signal(number, old)

    return restore


def _credential(options: dict[str, Any]) -> dict[str, str]:
    token_file: Path | None = options["token_file"]
    if token_file is not None:
        try:
            return {"worker_token": token_file.read_text().strip()}
        except OSError as exc:
            raise CommandError(f"cannot read {token_file}: {exc.strerror}") from None
    if os.environ.get(TOKEN_ENV):
        return {"worker_token": os.environ[TOKEN_ENV].strip()}
    if os.environ.get(API_KEY_ENV):
        return {"api_key": os.environ[API_KEY_ENV].strip()}
    raise CommandError(f"give a worker token ({TOKEN_ENV} or --token-file) or a tenant key ({API_KEY_ENV})")
