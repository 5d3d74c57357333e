"""The one BigQuery client: lazily created, cached, bounded, counted, retried by one policy, errors mapped.

The retry policy (`is_retryable_refusal`, `refusal_retry`): a statement BigQuery refused or aborted
before it changed anything (too many DML statements queued on the table, a concurrent-update abort, a
rate limit, a backend or internal error, a 5xx) is run again, with exponential backoff and jitter,
until BIGQUERY_RETRY_DEADLINE_SECONDS; then `Busy`, which the API answers 503 with Retry-After. Caller
errors are never retried. A statement whose outcome is unknown (its answer timed out or was lost) is
never started again as a new job: statements that may change data run as jobs with ids of our own, so
the library's re-send of the same jobs.insert finds the existing job (BigQuery answers 409) and the
gateway waits for that job instead of running the DML twice. Reads go through jobs.query, one round
trip, and are safe to send again.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import requests.adapters
import requests.exceptions
from django.conf import settings
from google.api_core import exceptions as google_exceptions
from google.api_core import retry as api_retry
from google.api_core.client_options import ClientOptions
from google.auth import exceptions as auth_exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery
from google.cloud.bigquery.retry import DEFAULT_RETRY

from bigquery_backend.exceptions import (
    BackendUnavailable,
    BigQueryError,
    Busy,
    Conflict,
    InvalidInput,
    NotFound,
)
from bigquery_backend.identifiers import check_dataset, check_project, check_table
from bigquery_backend.observers import METADATA, observed, statement_class

logger = logging.getLogger(__name__)

T = TypeVar("T")

QueryParameter = bigquery.ScalarQueryParameter | bigquery.ArrayQueryParameter


@dataclass
class JobCounter:
    """Counts BigQuery jobs (queries) and metadata API calls; tests and benchmarks read it."""

    jobs: int = 0
    api_calls: int = 0
    statements: list[str] = field(default_factory=list)
    # The process-wide totals keep no statements: a long-running server would grow without end.
    record_statements: bool = True


@dataclass(frozen=True)
class QueryResult:
    """Rows of a query as dicts, plus the DML affected-row count (None for SELECT)."""

    rows: list[dict[str, Any]]
    affected_rows: int | None


class BigQueryGateway:
    """Thin wrapper around `bigquery.Client` that every other module goes through."""

    def __init__(
        self,
        client: bigquery.Client,
        *,
        location: str | None,
        timeout: float,
        retry_deadline: float,
    ) -> None:
        self.client = client
        self.project = check_project(client.project)
        self.location = location
        self.timeout = timeout
        # The library defaults retry for up to 10 minutes (and a 500 from the emulator triggers
        # exactly that), so every call gets the same bounded policy.
        self.retry = DEFAULT_RETRY.with_timeout(retry_deadline)
        self.job_retry = refusal_retry(retry_deadline)
        # After a 409 on our own job id the job exists, but a lookup may not see it for a moment.
        self._job_lookup_retry = self.retry.with_predicate(_job_appears_or_transient)
        self._counter_lock = threading.Lock()
        self._counters: list[JobCounter] = [JobCounter(record_statements=False)]

    # --- counting -------------------------------------------------------------------------------
    @property
    def totals(self) -> JobCounter:
        """Counts since this gateway was created."""
        return self._counters[0]

    @contextmanager
    def count_jobs(self) -> Iterator[JobCounter]:
        """Count the jobs and API calls issued (by any thread) inside the block."""
        counter = JobCounter()
        with self._counter_lock:
            self._counters.append(counter)
        try:
            yield counter
        finally:
            with self._counter_lock:
                self._counters.remove(counter)

    def _record(self, *, job: str | None = None) -> None:
        with self._counter_lock:
            for counter in self._counters:
                if job is None:
                    counter.api_calls += 1
                else:
                    counter.jobs += 1
                    if counter.record_statements:
                        counter.statements.append(job)

    # --- queries --------------------------------------------------------------------------------
    def query(self, sql: str, parameters: Sequence[QueryParameter] = ()) -> QueryResult:
        """Run one parameterized statement as one job and return its rows and affected-row count."""
        config = bigquery.QueryJobConfig(query_parameters=list(parameters))
        self._record(job=sql)
        with observed(statement_class(sql)):
            if is_read_only(sql):
                return self._call(lambda: self._read(sql, config))
            return self._call(lambda: self._write(sql, config))

    def _read(self, sql: str, config: bigquery.QueryJobConfig) -> QueryResult:
        # query_and_wait uses jobs.query: one round trip for short statements instead of insert + poll +
        # fetch (bench/repository_latency.py compares both). A read is safe to send again.
        rows = self.client.query_and_wait(
            sql,
            job_config=config,
            location=self.location,
            api_timeout=self.timeout,
            wait_timeout=self.timeout,
            retry=self.retry,
            job_retry=self.job_retry,
        )
        if not rows.schema and rows.num_dml_affected_rows is None and rows.job_id:
            # No result columns: a failed statement whose jobs.query answer carried the failure only in
            # `errors`, which the library ignores (the emulator answers so; BigQuery answers 4xx). The
            # job's own status is authoritative.
            self._raise_if_failed(rows.job_id)
        return QueryResult(rows=[dict(row.items()) for row in rows], affected_rows=rows.num_dml_affected_rows)

    def _write(self, sql: str, config: bigquery.QueryJobConfig) -> QueryResult:
        """A statement that may change data: jobs of our own ids, again only after a refusal."""
        job_ids = _JobIds()
        return self.job_retry(lambda: self._run_job(sql, config, job_ids))()

    def _run_job(self, sql: str, config: bigquery.QueryJobConfig, job_ids: _JobIds) -> QueryResult:
        job_id = job_ids.current
        try:
            job = self._insert_job(sql, config, job_id)
        except google_exceptions.ClientError:
            # A 4xx: BigQuery did not start this job (or failed it at once). A retry is a new job; after
            # a 5xx or a lost answer the same id is sent again, since the job may exist.
            job_ids.advance()
            raise
        try:
            rows = job.result(timeout=self.timeout, retry=self.retry, job_retry=None)
        except Exception as exc:
            if job.error_result is None:
                # Its polls failed, not the job: it may have run, so it is never started again.
                raise BackendUnavailable(
                    f"BigQuery did not report the outcome of job {job_id}: {_short_message(exc)}",
                    job_id=job_id,
                ) from exc
            job_ids.advance()
            raise
        return QueryResult(rows=[dict(row.items()) for row in rows], affected_rows=job.num_dml_affected_rows)

    def _insert_job(self, sql: str, config: bigquery.QueryJobConfig, job_id: str) -> bigquery.QueryJob:
        try:
            # The library re-sends the same jobs.insert (same id) after a timeout or a 5xx.
            return self.client.query(
                sql,
                job_config=config,
                job_id=job_id,
                location=self.location,
                timeout=self.timeout,
                retry=self.retry,
                job_retry=None,
            )
        except google_exceptions.Conflict:
            # Our id exists: an earlier send of this very attempt reached BigQuery and only its answer was
            # lost. That job is the statement; wait for it rather than run the DML a second time.
            self._record()
            job = self.client.get_job(
                job_id, location=self.location, retry=self._job_lookup_retry, timeout=self.timeout
            )
            return cast(bigquery.QueryJob, job)  # the id is of a query job: ours

    def job_finished(self, job_id: str) -> bool | None:
        """Whether a job of ours has finished (True), may still run (False), or never existed (None)."""
        self._record()
        try:
            job = self._call(lambda: self.client.get_job(job_id, location=self.location, **self._bounds()))
        except NotFound:
            return None
        return job.state == "DONE"

    def _raise_if_failed(self, job_id: str) -> None:
        self._record()
        job = self.client.get_job(job_id, location=self.location, **self._bounds())
        if job.error_result:
            raise map_job_error(job.error_result)

    def query_via_job(self, sql: str, parameters: Sequence[QueryParameter] = ()) -> QueryResult:
        """Same as `query` through jobs.insert + getQueryResults; kept for the benchmark's comparison."""
        config = bigquery.QueryJobConfig(query_parameters=list(parameters))
        self._record(job=sql)

        def run() -> QueryResult:
            # With any job_retry, client.query wraps jobs.insert in the library's own 10-minute retry
            # (an unreachable endpoint then hangs for 10 minutes): the bounded job retry goes to
            # result(), which re-runs a failed job with the same bounds.
            job = self.client.query(
                sql,
                job_config=config,
                location=self.location,
                timeout=self.timeout,
                retry=self.retry,
                job_retry=None,
            )
            rows = job.result(timeout=self.timeout, retry=self.retry, job_retry=self.job_retry)
            return QueryResult(
                rows=[dict(row.items()) for row in rows], affected_rows=job.num_dml_affected_rows
            )

        with observed(statement_class(sql)):
            return self._call(run)

    # --- metadata ---------------------------------------------------------------------------------
    def dataset_ref(self, dataset_id: str) -> str:
        """`project.dataset` after checking the dataset id."""
        return f"{self.project}.{check_dataset(dataset_id)}"

    def table_ref(self, dataset_id: str, table_id: str) -> str:
        """`project.dataset.table` after checking both ids."""
        return f"{self.dataset_ref(dataset_id)}.{check_table(table_id)}"

    def get_dataset(self, dataset_id: str) -> bigquery.Dataset:
        # Every ref is checked before `_api` counts a call: a refused name issues none.
        ref = self.dataset_ref(dataset_id)
        return self._api(lambda: self.client.get_dataset(ref, **self._bounds()))

    def create_dataset(self, dataset: bigquery.Dataset) -> bigquery.Dataset:
        return self._api(lambda: self.client.create_dataset(dataset, **self._bounds()))

    def update_dataset(self, dataset: bigquery.Dataset, fields: Sequence[str]) -> bigquery.Dataset:
        return self._api(lambda: self.client.update_dataset(dataset, list(fields), **self._bounds()))

    def delete_dataset(self, dataset_id: str, *, delete_contents: bool = False) -> None:
        ref = self.dataset_ref(dataset_id)
        self._api(
            lambda: self.client.delete_dataset(
                ref,
                delete_contents=delete_contents,
                not_found_ok=True,
                **self._bounds(),
            )
        )

    def get_table(self, dataset_id: str, table_id: str) -> bigquery.Table:
        ref = self.table_ref(dataset_id, table_id)
        return self._api(lambda: self.client.get_table(ref, **self._bounds()))

    def create_table(self, table: bigquery.Table) -> bigquery.Table:
        return self._api(lambda: self.client.create_table(table, **self._bounds()))

    def update_table(self, table: bigquery.Table, fields: Sequence[str]) -> bigquery.Table:
        return self._api(lambda: self.client.update_table(table, list(fields), **self._bounds()))

    def delete_table(self, dataset_id: str, table_id: str) -> None:
        ref = self.table_ref(dataset_id, table_id)
        self._api(lambda: self.client.delete_table(ref, not_found_ok=True, **self._bounds()))

    def list_table_ids(self, dataset_id: str) -> list[str]:
        ref = self.dataset_ref(dataset_id)
        return self._api(lambda: [t.table_id for t in self.client.list_tables(ref, **self._bounds())])

    def _bounds(self) -> dict[str, Any]:
        return {"retry": self.retry, "timeout": self.timeout}

    def _api(self, call: Callable[[], T]) -> T:
        self._record()
        with observed(METADATA):
            return self._call(call)

    @staticmethod
    def _call(call: Callable[[], T]) -> T:
        try:
            return call()
        except BigQueryError:
            raise
        except Exception as exc:
            raise map_error(exc) from exc


# --- the retry policy ------------------------------------------------------------------------------
# Reasons (`errors[].reason`) and message parts of refusals: BigQuery did not run the statement, or
# aborted it before it changed anything, so running it again is safe and soon succeeds. Sources:
# google.cloud.bigquery.retry (the library's own retryable reasons), the DML concurrency limits
# (https://cloud.google.com/bigquery/docs/data-manipulation-language: "Too many DML statements
# outstanding against table ..., limit is 20", reason resourcesExceeded) and concurrent-update aborts
# (https://cloud.google.com/bigquery/docs/troubleshoot-queries, reason invalidQuery). Both of those
# come with HTTP 400 and reasons that other, genuine errors share, hence the messages.
_REFUSAL_REASONS = frozenset(
    {
        "rateLimitExceeded",
        "jobRateLimitExceeded",
        "backendError",
        "jobBackendError",
        "internalError",
        "jobInternalError",
        "badGateway",
    }
)
_REFUSAL_MESSAGES = ("too many dml statements outstanding", "due to concurrent update")
BACKOFF_INITIAL_SECONDS = 0.25
BACKOFF_MAXIMUM_SECONDS = 4.0
# What a Busy tells the caller: a table's DML queue drains, and a rate limit reopens, within seconds
# (sooner than an outage, whose 503 says 5).
BUSY_RETRY_AFTER_SECONDS = 3
# The library's own rule for transient API errors (timeouts, 5xx, rate limits).
_TRANSIENT = DEFAULT_RETRY._predicate


def is_refusal(reason: str | None, message: str | None) -> bool:
    """True for a refusal (module docstring) given a BigQuery error's reason and message."""
    text = (message or "").lower()
    return reason in _REFUSAL_REASONS or any(part in text for part in _REFUSAL_MESSAGES)


def is_retryable_refusal(exc: BaseException) -> bool:
    """True when `exc` (or what a RetryError gave up on) is a refusal: the statement did not run."""
    exc = _innermost(exc)
    if not isinstance(exc, google_exceptions.GoogleAPICallError):
        return False
    errors = [error for error in exc.errors or [] if isinstance(error, dict)]
    if any(error.get("reason") for error in errors):
        # A failed job's status is mapped to an HTTP class by the library (unknown reasons to 500):
        # its reason says more than that class.
        return any(is_refusal(error.get("reason"), error.get("message")) for error in errors)
    # A 504 is a timeout (outcome unknown) and a 501 a caller error, not refusals.
    unknown_or_caller = google_exceptions.DeadlineExceeded | google_exceptions.MethodNotImplemented
    if isinstance(exc, google_exceptions.ServerError) and not isinstance(exc, unknown_or_caller):
        return True
    return isinstance(exc, google_exceptions.TooManyRequests) or is_refusal(None, exc.message)


def refusal_retry(deadline: float) -> api_retry.Retry:
    """The one retry of refused statements: exponential backoff with full jitter, within `deadline`."""
    return api_retry.Retry(
        predicate=is_retryable_refusal,
        initial=BACKOFF_INITIAL_SECONDS,
        maximum=BACKOFF_MAXIMUM_SECONDS,
        multiplier=2.0,
        timeout=deadline,
        on_error=_log_refusal,
    )


def _log_refusal(exc: BaseException) -> None:
    # The reason only: BigQuery's message can quote the statement.
    cause = _innermost(exc)
    reasons = [str(e.get("reason")) for e in getattr(cause, "errors", None) or [] if isinstance(e, dict)]
    logger.info("BigQuery refused a statement (%s); retrying", ", ".join(reasons) or type(cause).__name__)


def _job_appears_or_transient(exc: BaseException) -> bool:
    return isinstance(exc, google_exceptions.NotFound) or bool(_TRANSIENT(exc))


def is_read_only(sql: str) -> bool:
    """A SELECT (or WITH ... SELECT): sending it twice changes nothing."""
    words = sql.lstrip("( \n\t").split(None, 1)
    return bool(words) and words[0].upper() in ("SELECT", "WITH")


class _JobIds:
    """Job ids of one statement's attempts: a re-send reuses the attempt's id, a new attempt gets the next."""

    def __init__(self) -> None:
        self._base = f"cvg_{uuid.uuid4().hex}"
        self._attempt = 1

    @property
    def current(self) -> str:
        return f"{self._base}_{self._attempt}"

    def advance(self) -> None:
        self._attempt += 1


def _innermost(exc: BaseException) -> BaseException:
    # job_retry wraps the API call's retry: the error underneath both.
    while isinstance(exc, google_exceptions.RetryError) and exc.cause is not None:
        exc = exc.cause
    return exc


def map_error(exc: Exception) -> BigQueryError:
    """Translate a google-cloud / transport exception into one of ours, keeping the message."""
    message = _short_message(exc)
    if is_retryable_refusal(exc):
        refusal = _short_message(_innermost(exc))  # type: ignore[arg-type]
        return Busy(
            f"BigQuery refused the statement for now: {refusal}", retry_after=BUSY_RETRY_AFTER_SECONDS
        )
    if isinstance(exc, google_exceptions.NotFound):
        return NotFound(message)
    if isinstance(exc, google_exceptions.Conflict | google_exceptions.PreconditionFailed):
        return Conflict(message)
    if isinstance(exc, google_exceptions.Forbidden):
        # 403 covers both missing IAM roles and quota exhaustion: neither is the caller's input.
        return BackendUnavailable(f"BigQuery refused the request: {message}")
    if isinstance(exc, google_exceptions.BadRequest):
        return InvalidInput(message)
    if isinstance(exc, auth_exceptions.DefaultCredentialsError | auth_exceptions.RefreshError):
        return BackendUnavailable(f"BigQuery credentials are missing or invalid: {message}")
    if isinstance(
        exc,
        google_exceptions.RetryError
        | google_exceptions.ServerError
        | google_exceptions.TooManyRequests
        | google_exceptions.DeadlineExceeded
        | requests.exceptions.RequestException
        | TimeoutError
        | ConnectionError,
    ):
        return BackendUnavailable(f"BigQuery is unavailable: {message}")
    return BigQueryError(message)


# `errorResult.reason` of a failed job (https://cloud.google.com/bigquery/docs/error-messages).
_JOB_ERROR_REASONS: dict[str, type[BigQueryError]] = {
    "notFound": NotFound,
    "duplicate": Conflict,
    "invalid": InvalidInput,
    "invalidQuery": InvalidInput,
    "accessDenied": BackendUnavailable,
    "backendError": BackendUnavailable,
    "internalError": BackendUnavailable,
    "quotaExceeded": BackendUnavailable,
    "rateLimitExceeded": BackendUnavailable,
    "timeout": BackendUnavailable,
}


def map_job_error(error_result: dict[str, Any]) -> BigQueryError:
    """Translate a failed job's `errorResult` into one of our exceptions."""
    message = str(error_result.get("message") or error_result.get("reason") or "job failed")
    if is_refusal(error_result.get("reason"), message):
        return Busy(
            f"BigQuery refused the statement for now: {message}", retry_after=BUSY_RETRY_AFTER_SECONDS
        )
    error_class = _JOB_ERROR_REASONS.get(str(error_result.get("reason")), BigQueryError)
    return error_class(message)


def _short_message(exc: Exception) -> str:
    if isinstance(exc, google_exceptions.GoogleAPICallError):
        return str(exc.message).split("\n", 1)[0]
    if isinstance(exc, google_exceptions.RetryError) and exc.cause is not None:
        return f"gave up retrying: {type(_innermost(exc)).__name__}"
    return str(exc).split("\n", 1)[0]


# --- factory ----------------------------------------------------------------------------------------
_gateway: BigQueryGateway | None = None
_gateway_lock = threading.Lock()


def get_gateway() -> BigQueryGateway:
    """The process-wide gateway, created on first use from settings."""
    global _gateway
    if _gateway is None:
        with _gateway_lock:
            if _gateway is None:
                _gateway = build_gateway()
    return _gateway


def reset_gateway() -> None:
    """Forget the cached gateway, for example after settings changed in a test."""
    global _gateway
    with _gateway_lock:
        _gateway = None


def build_gateway() -> BigQueryGateway:
    """Create a gateway for the emulator (anonymous) or real BigQuery (ADC) from settings."""
    emulator_host: str | None = settings.BIGQUERY_EMULATOR_HOST
    try:
        if emulator_host:
            client = bigquery.Client(
                project=settings.BIGQUERY_PROJECT or "convergence-local",
                location=settings.BIGQUERY_LOCATION,
                credentials=AnonymousCredentials(),
                client_options=ClientOptions(api_endpoint=emulator_host),
            )
        else:
            client = bigquery.Client(project=settings.BIGQUERY_PROJECT, location=settings.BIGQUERY_LOCATION)
    except Exception as exc:
        raise map_error(exc) from exc
    _widen_connection_pool(client, size=settings.BIGQUERY_MAX_CONNECTIONS)
    return BigQueryGateway(
        client,
        location=settings.BIGQUERY_LOCATION,
        timeout=settings.BIGQUERY_TIMEOUT_SECONDS,
        retry_deadline=settings.BIGQUERY_RETRY_DEADLINE_SECONDS,
    )


def _widen_connection_pool(client: bigquery.Client, *, size: int) -> None:
    """Keep `size` connections per host: group-committed ticks send a statement per table side by side,
    and each of a server's threads may wait on its own job; urllib3's default of 10 dropped the rest."""
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=size)
    for prefix in ("https://", "http://"):
        client._http.mount(prefix, adapter)


def connect_setting_signals() -> None:
    """Drop the cached gateway whenever a BIGQUERY_* setting is overridden (tests do that)."""
    from django.core.signals import setting_changed

    def on_setting_changed(*, setting: str, **_: Any) -> None:
        if setting.startswith("BIGQUERY_"):
            reset_gateway()

    setting_changed.connect(on_setting_changed, weak=False, dispatch_uid="bigquery_backend.reset_gateway")
