"""The reference pipeline worker (`manage.py run_worker`): an external worker over the worker HTTP API.

It holds no queue logic of its own: it claims runs over `/api/v1/worker/claim` with a worker token or a
tenant key, runs each claimed run's template (`pipeline_execution.py`) against the tenant's dataset,
heartbeats while the template runs, and reports `complete` (SUCCEEDED, or FAILED for good) or `fail`
(retryable: BigQuery unavailable). A stop request (SIGTERM in the command) lets the run in hand finish
and report, then claims no more.

The claim answer is one run today; an answer carrying a `runs` list (several runs per claim) is
handled too, each run in turn.

Off the emulator (`BIGQUERY_EMULATOR_HOST` empty) the worker fetches the run's credentials over
`/runs/{id}/credentials` while it holds the run, and runs the template as the tenant's GCP service
account; a run whose tenant has none fails for good, naming what to add. The key stays in memory,
for that run only, and is never logged.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone

from bigquery_backend.client import BigQueryGateway
from tenants_app.models import Provider
from tenants_app.pipeline_execution import (
    FAILED,
    CredentialUnusable,
    Execution,
    ExecutionRetryable,
    service_account_gateway,
    template_execute,
)

logger = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS = 300
MAX_ERROR_LENGTH = 10_000
Executor = Callable[..., Execution]
GatewayFactory = Callable[[Mapping[str, Any]], BigQueryGateway]
# The worker API's answers when the lease is gone: stop working on the run, report nothing.
LEASE_GONE = (404, 409)


class WorkerApiError(Exception):
    """The worker API refused a call or could not be reached; `retry_after` when it said when to retry."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class MissingCredential(Exception):
    """The run's template needs a provider's credential the tenant has not stored: fails for good."""


@dataclass(frozen=True)
class ClaimedRun:
    run_id: str
    tenant_id: str
    pipeline_id: str
    parameters: dict[str, Any] | None
    attempt: int

    @classmethod
    def from_answer(cls, body: dict[str, Any]) -> ClaimedRun:
        return cls(
            run_id=body["run_id"],
            tenant_id=body["tenant_id"],
            pipeline_id=body["pipeline_id"],
            parameters=body.get("parameters"),
            attempt=int(body["attempt"]),
        )


class WorkerApiClient:
    """HTTP calls of the worker API. The credential goes in a header only, never in a message or log."""

    def __init__(
        self,
        *,
        base_url: str,
        worker_id: str,
        worker_token: str | None = None,
        api_key: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        if (worker_token is None) == (api_key is None):
            raise ValueError("give a worker token or a tenant API key, not both")
        self.base_url = base_url.rstrip("/") + "/api/v1/worker"
        self.worker_id = worker_id
        self.timeout = timeout
        self.session = requests.Session()
        if worker_token is not None:
            self.session.headers["Authorization"] = f"Bearer {worker_token}"
        else:
            self.session.headers["X-API-Key"] = str(api_key)

    def claim(
        self, *, lease_seconds: int, tenant_id: str | None = None, max_runs: int = 1
    ) -> list[ClaimedRun]:
        body: dict[str, Any] = {"worker_id": self.worker_id, "lease_seconds": lease_seconds}
        if tenant_id is not None:
            body["tenant_id"] = tenant_id
        if max_runs > 1:
            body["max_runs"] = max_runs
        answer = self._post("/claim", body)
        if answer is None:
            return []
        runs = answer.get("runs", [answer])
        return [ClaimedRun.from_answer(run) for run in runs]

    def heartbeat(self, run: ClaimedRun, *, lease_seconds: int) -> None:
        self._post(f"/runs/{run.run_id}/heartbeat", self._held(run, lease_seconds=lease_seconds))

    def complete(self, run: ClaimedRun, execution: Execution) -> dict[str, Any] | None:
        body = self._held(
            run,
            status=execution.status,
            started_at=execution.started_at,
            ended_at=execution.ended_at,
            step_logs=execution.step_logs,
            dq_results=execution.dq_results,
            run_metadata=execution.run_metadata or None,
            error=execution.error,
        )
        return self._post(f"/runs/{run.run_id}/complete", body)

    def credentials(self, run: ClaimedRun) -> dict[str, Any]:
        """The decrypted credentials the held run needs: keep the answer in memory, never log it."""
        return self._post(f"/runs/{run.run_id}/credentials", self._held(run)) or {}

    def fail(self, run: ClaimedRun, error: str) -> dict[str, Any] | None:
        return self._post(f"/runs/{run.run_id}/fail", self._held(run, error=error[:MAX_ERROR_LENGTH]))

    def _held(self, run: ClaimedRun, **values: Any) -> dict[str, Any]:
        return {"worker_id": self.worker_id, "attempt": run.attempt, **values}

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        try:
            response = self.session.post(
                self.base_url + path,
                data=json.dumps(body, cls=DjangoJSONEncoder),
                headers={"Content-Type": "application/json"},
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            # The class only: a message can quote the URL, never the headers, but keep it short anyway.
            raise WorkerApiError(f"worker API unreachable ({type(exc).__name__})") from None
        if response.status_code == 204:
            return None
        if response.status_code >= 400:
            raise WorkerApiError(
                f"worker API answered {response.status_code} to {path}: {_error_of(response)}",
                status=response.status_code,
                retry_after=_retry_after(response),
            )
        return dict(response.json())


@dataclass
class ReferenceWorker:
    """Claims and runs until `stop` is set (or, with `until_idle`, until nothing is left to claim)."""

    client: WorkerApiClient
    stop: threading.Event = field(default_factory=threading.Event)
    lease_seconds: int = DEFAULT_LEASE_SECONDS
    heartbeat_seconds: float | None = None
    poll_seconds: float = 5.0
    tenant_id: str | None = None
    execute: Executor = template_execute
    # Off the emulator each run goes to BigQuery as its tenant's service account, fetched for the run.
    run_credentials: bool = field(default_factory=lambda: not settings.BIGQUERY_EMULATOR_HOST)
    gateway_for: GatewayFactory = service_account_gateway

    def run(self, *, until_idle: bool = False) -> int:
        """The number of runs finished; returns once stopped, or idle with `until_idle`."""
        finished = 0
        while not self.stop.is_set():
            try:
                runs = self.client.claim(lease_seconds=self.lease_seconds, tenant_id=self.tenant_id)
            except WorkerApiError as exc:
                if exc.status in (401, 403) or (until_idle and exc.retry_after is None):
                    raise  # a wrong or revoked credential (waiting will not fix it), or a one-shot run
                logger.warning("claim refused or failed: %s", exc)
                self.stop.wait(exc.retry_after or self.poll_seconds)
                continue
            if not runs:
                if until_idle:
                    break
                self.stop.wait(self.poll_seconds)
                continue
            for run in runs:
                # A stop after this claim still finishes what was claimed: each run is reported once.
                self.process(run)
                finished += 1
        return finished

    def process(self, run: ClaimedRun) -> None:
        """Run one claimed run with heartbeats, then report it."""
        logger.info("run %s (%s, tenant %s) claimed", run.run_id, run.pipeline_id, run.tenant_id)
        with _Heartbeat(self, run):
            try:
                execution = self._execute(run)
            except WorkerApiError as exc:
                if exc.status in LEASE_GONE:
                    logger.warning("run %s: no longer held, dropped: %s", run.run_id, exc)
                    return
                error = f"credentials unavailable: {exc}"
            except (MissingCredential, CredentialUnusable) as exc:
                now = timezone.now()
                execution, error = Execution(FAILED, now, now, error=str(exc)), None
            except ExecutionRetryable as exc:
                error = f"BigQuery unavailable: {exc}"
            except Exception as exc:
                # Any bug in a template still hands the run back (retried, then FAILED), never strands it.
                logger.exception("run %s: the template raised", run.run_id)
                error = f"worker error: {type(exc).__name__}"
            else:
                error = None
        if error is not None:
            self._report(lambda: self.client.fail(run, error), run)
            return
        self._report(lambda: self.client.complete(run, execution), run)
        logger.info("run %s reported %s", run.run_id, execution.status)

    def _execute(self, run: ClaimedRun) -> Execution:
        arguments: dict[str, Any] = {
            "tenant_id": run.tenant_id,
            "pipeline_id": run.pipeline_id,
            "parameters": run.parameters,
        }
        gateway = self._tenant_gateway(run) if self.run_credentials else None
        if gateway is None:
            return self.execute(**arguments)
        try:
            return self.execute(**arguments, gateway=gateway)
        finally:
            gateway.client.close()

    def _tenant_gateway(self, run: ClaimedRun) -> BigQueryGateway | None:
        """The tenant's service account for this run; None when its template needs no GCP credential."""
        answer = self.client.credentials(run)
        keys = [
            one["payload"] for one in answer.get("credentials", []) if one.get("provider") == Provider.GCP
        ]
        if keys:
            return self.gateway_for(keys[0])
        if Provider.GCP in answer.get("providers", []):
            raise MissingCredential(
                f"{run.pipeline_id} needs an active GCP service-account credential of tenant "
                f"{run.tenant_id}: add one, then requeue the run"
            )
        return None

    def _report(self, send: Callable[[], object], run: ClaimedRun) -> None:
        try:
            send()
        except WorkerApiError as exc:
            # The lease runs out and the reaper re-queues the run: nothing is lost, only delayed.
            logger.error("run %s: the report was not accepted: %s", run.run_id, exc)


class _Heartbeat:
    """Extends the lease every third of it while a run executes, in a thread of its own."""

    def __init__(self, worker: ReferenceWorker, run: ClaimedRun) -> None:
        self.worker, self.run = worker, run
        self.done = threading.Event()
        self.interval = worker.heartbeat_seconds or max(1.0, worker.lease_seconds / 3)
        self.thread = threading.Thread(target=self._beat, name=f"heartbeat-{run.run_id}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.done.set()
        self.thread.join()

    def _beat(self) -> None:
        while not self.done.wait(self.interval):
            try:
                self.worker.client.heartbeat(self.run, lease_seconds=self.worker.lease_seconds)
            except WorkerApiError as exc:
                logger.warning("run %s: heartbeat failed: %s", self.run.run_id, exc)


def _error_of(response: requests.Response) -> str:
    try:
        error = response.json().get("error", {})
        return str(error.get("message") or error.get("code") or "")[:500]
    except ValueError:
        return ""


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
