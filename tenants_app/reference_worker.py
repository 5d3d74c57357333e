"""The reference pipeline worker (`manage.py run_worker`): an external worker over the worker HTTP API.

It holds no queue logic of its own: it claims runs over `/api/v1/worker/claim` with a worker token or a
tenant key, runs each claimed run's template (`pipeline_execution.py`) against the tenant's dataset,
heartbeats while the template runs, and reports `complete` (SUCCEEDED, or FAILED for good) or `fail`
(retryable: BigQuery unavailable). A stop request (SIGTERM in the command) lets the run in hand finish
and report, then claims no more.

The claim answer is one run today; an answer carrying a `runs` list (several runs per claim) is
handled too, each run in turn.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
from django.core.serializers.json import DjangoJSONEncoder

from tenants_app.pipeline_execution import Execution, ExecutionRetryable, template_execute

logger = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS = 300
MAX_ERROR_LENGTH = 10_000
Executor = Callable[..., Execution]


class WorkerApiError(Exception):
    """The worker API refused a call or could not be reached; `retry_after` when it said when to retry."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


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
                execution = self.execute(
                    tenant_id=run.tenant_id, pipeline_id=run.pipeline_id, parameters=run.parameters
                )
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
