"""Our own exceptions: callers never see google.api_core errors."""

from __future__ import annotations


class BigQueryError(Exception):
    """Base class for every error the BigQuery backend raises."""


class NotFound(BigQueryError):
    """The dataset, table or row does not exist."""


class Conflict(BigQueryError):
    """The thing already exists, or a concurrent change got there first."""


class InvalidInput(BigQueryError):
    """A value, identifier or query was refused; `errors` maps field names to reasons."""

    def __init__(self, message: str, *, errors: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or {}


class InvalidIdentifier(InvalidInput):
    """A dataset, table or column name that does not match the strict identifier pattern."""


class BackendUnavailable(BigQueryError):
    """BigQuery could not be reached, timed out, or refused our credentials.

    `job_id`: the statement's job when BigQuery may have accepted it without telling its outcome (it
    may still run): `BigQueryGateway.job_finished` tells when it has.
    """

    def __init__(self, message: str = "", *, job_id: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id


class Busy(BackendUnavailable):
    """BigQuery kept refusing a statement it did not run (too many DML statements queued on the table, a
    concurrent-update abort, a rate limit, a backend error) until the gateway's retry deadline passed.

    Sending the same request again later succeeds; `retry_after` is how many seconds to wait first.
    """

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
