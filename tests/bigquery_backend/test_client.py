"""The gateway: cached client from settings, bounded calls, and errors mapped to our exceptions."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from django.test import override_settings
from google.api_core import exceptions as google_exceptions
from google.api_core.client_options import ClientOptions
from google.auth import exceptions as auth_exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from bigquery_backend import client as client_module
from bigquery_backend.client import BigQueryGateway, build_gateway, get_gateway, map_error
from bigquery_backend.exceptions import (
    BackendUnavailable,
    BigQueryError,
    Busy,
    Conflict,
    InvalidIdentifier,
    InvalidInput,
    NotFound,
)
from bigquery_backend.repository import Repository
from tests.bigquery_backend.widgets import Widget, make_widget

QUERY_METHODS = [
    pytest.param(BigQueryGateway.query, id="jobs.query"),
    pytest.param(BigQueryGateway.query_via_job, id="jobs.insert"),
]
Query = Callable[..., Any]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gateway_for(endpoint: str, project: str) -> BigQueryGateway:
    client = bigquery.Client(
        project=project,
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=endpoint),
    )
    return BigQueryGateway(client, location="US", timeout=2, retry_deadline=2)


# --- queries through the real client --------------------------------------------------------------
@pytest.mark.parametrize("run", QUERY_METHODS)
def test_it_returns_rows_as_dicts(gateway: BigQueryGateway, run: Query) -> None:
    parameters = [bigquery.ScalarQueryParameter("word", "STRING", "it's")]
    result = run(gateway, "SELECT @word AS word, 2 AS two", parameters)
    assert result.rows == [{"word": "it's", "two": 2}]
    assert result.affected_rows is None


@pytest.mark.parametrize("run", QUERY_METHODS)
def test_it_reports_rows_affected_by_dml(
    gateway: BigQueryGateway, widgets: Repository[Widget], run: Query
) -> None:
    widgets.insert(make_widget("a"), make_widget("b"), make_widget("c"))
    result = run(gateway, f"UPDATE {widgets.table} SET used = used + 1 WHERE widget_id != 'b'")
    assert result.affected_rows == 2


@pytest.mark.parametrize("run", QUERY_METHODS)
def test_it_maps_a_syntax_error_to_invalid_input(gateway: BigQueryGateway, run: Query) -> None:
    with pytest.raises(InvalidInput, match="SELEC"):
        run(gateway, "SELEC 1")


@pytest.mark.parametrize("run", QUERY_METHODS)
def test_it_maps_a_runtime_error_to_invalid_input(gateway: BigQueryGateway, run: Query) -> None:
    with pytest.raises(InvalidInput):
        run(gateway, "SELECT 1 / 0 AS boom")


@pytest.mark.parametrize("run", QUERY_METHODS)
def test_it_maps_querying_a_missing_table_to_not_found(
    gateway: BigQueryGateway, dataset: str, run: Query
) -> None:
    with pytest.raises(NotFound, match="nope"):
        run(gateway, f"SELECT * FROM `{gateway.project}.{dataset}.nope`")


@pytest.mark.parametrize("run", QUERY_METHODS)
def test_it_maps_dml_on_a_missing_table_to_not_found(
    gateway: BigQueryGateway, dataset: str, run: Query
) -> None:
    with pytest.raises(NotFound):
        run(gateway, f"DELETE FROM `{gateway.project}.{dataset}.nope` WHERE TRUE")


def test_it_maps_ddl_creating_an_existing_table_to_conflict(
    gateway: BigQueryGateway, widgets: Repository[Widget]
) -> None:
    with pytest.raises(Conflict):
        gateway.query(f"CREATE TABLE {widgets.table} (x INT64)")


def test_it_runs_successful_ddl(gateway: BigQueryGateway, dataset: str) -> None:
    result = gateway.query(f"CREATE TABLE `{gateway.project}.{dataset}.made_by_ddl` (x INT64)")
    assert result.rows == []
    assert "made_by_ddl" in gateway.list_table_ids(dataset)


def test_it_raises_not_found_from_a_repository_on_a_missing_table(
    gateway: BigQueryGateway, dataset: str
) -> None:
    repository = Repository(Widget, dataset=dataset, gateway=gateway)
    with pytest.raises(NotFound):
        repository.list()
    with pytest.raises(NotFound):
        repository.insert(make_widget("a"))


def test_it_raises_not_found_from_a_repository_on_a_missing_dataset(gateway: BigQueryGateway) -> None:
    repository = Repository(Widget, dataset="no_such_dataset_anywhere", gateway=gateway)
    with pytest.raises(NotFound):
        repository.get("a")


# --- metadata -------------------------------------------------------------------------------------
def test_it_maps_creating_an_existing_dataset_to_conflict(gateway: BigQueryGateway, dataset: str) -> None:
    with pytest.raises(Conflict):
        gateway.create_dataset(bigquery.Dataset(gateway.dataset_ref(dataset)))


def test_it_maps_creating_an_existing_table_to_conflict(
    gateway: BigQueryGateway, widgets: Repository[Widget]
) -> None:
    table = bigquery.Table(
        gateway.table_ref(widgets.dataset, "widgets"), schema=[bigquery.SchemaField("x", "INT64")]
    )
    with pytest.raises(Conflict):
        gateway.create_table(table)


def test_it_maps_missing_metadata_to_not_found(gateway: BigQueryGateway, dataset: str) -> None:
    with pytest.raises(NotFound):
        gateway.get_dataset("no_such_dataset_anywhere")
    with pytest.raises(NotFound):
        gateway.get_table(dataset, "nope")


def test_it_deletes_missing_things_quietly(gateway: BigQueryGateway, dataset: str) -> None:
    gateway.delete_table(dataset, "nope")
    gateway.delete_dataset("no_such_dataset_anywhere")


def test_it_deletes_a_dataset_with_its_tables(gateway: BigQueryGateway, widgets: Repository[Widget]) -> None:
    gateway.delete_dataset(widgets.dataset, delete_contents=True)
    with pytest.raises(NotFound):
        gateway.get_dataset(widgets.dataset)


def test_it_checks_identifiers_before_calling_the_api(gateway: BigQueryGateway) -> None:
    with gateway.count_jobs() as counter:
        for call in (
            lambda: gateway.get_dataset("x;y"),
            lambda: gateway.get_table("ok", "a b"),
            lambda: gateway.delete_table("ok", "a`b"),
            lambda: gateway.delete_dataset("x'y"),
            lambda: gateway.list_table_ids("x y"),
        ):
            with pytest.raises(InvalidIdentifier):
                call()
    assert (counter.jobs, counter.api_calls) == (0, 0)


# --- unavailable backends -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda g: g.query("SELECT 1"), id="query"),
        pytest.param(lambda g: g.query_via_job("SELECT 1"), id="query-via-job"),
        pytest.param(lambda g: g.get_dataset("anything"), id="get-dataset"),
        pytest.param(
            lambda g: Repository(Widget, dataset="anything", gateway=g).get("a"), id="repository-get"
        ),
    ],
)
def test_it_gives_up_quickly_on_an_unreachable_endpoint(call: Callable[[BigQueryGateway], Any]) -> None:
    gateway = gateway_for(f"http://127.0.0.1:{closed_port()}", "convergence-local")
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as caught:
        call(gateway)
    assert time.monotonic() - started < 15
    assert not isinstance(caught.value, google_exceptions.GoogleAPIError)
    assert "unavailable" in str(caught.value)


@pytest.fixture
def failing_endpoint() -> Iterator[str]:
    """A loopback HTTP server that answers every request with 500, like a broken backend."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _fail(self) -> None:
            body = b'{"error": {"code": 500, "message": "backend broke"}}'
            self.send_response(500)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PATCH = do_DELETE = _fail

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda g: g.query("SELECT 1"), id="query"),
        pytest.param(lambda g: g.get_dataset("x"), id="metadata"),
    ],
)
def test_it_bounds_retries_when_the_backend_keeps_failing(
    failing_endpoint: str, call: Callable[[BigQueryGateway], Any]
) -> None:
    # The library's default would retry a 500 for up to 10 minutes.
    gateway = gateway_for(failing_endpoint, "convergence-local")
    started = time.monotonic()
    with pytest.raises(BackendUnavailable):
        call(gateway)
    assert time.monotonic() - started < 15


def test_it_reports_missing_credentials_as_unavailable(
    settings: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    settings.BIGQUERY_EMULATOR_HOST = None
    settings.BIGQUERY_PROJECT = "some-real-project"
    with pytest.raises(BackendUnavailable, match="credentials"):
        build_gateway()


# --- mapping of library exceptions ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (google_exceptions.NotFound("gone"), NotFound),
        (google_exceptions.Conflict("exists"), Conflict),
        (google_exceptions.PreconditionFailed("etag"), Conflict),
        (google_exceptions.BadRequest("bad"), InvalidInput),
        (google_exceptions.Forbidden("no role"), BackendUnavailable),
        # Refusals the retry policy gave up on: Busy, a BackendUnavailable with a retry-after hint.
        (google_exceptions.TooManyRequests("slow down"), Busy),
        (google_exceptions.InternalServerError("oops"), Busy),
        (google_exceptions.ServiceUnavailable("down"), Busy),
        (google_exceptions.DeadlineExceeded("late"), BackendUnavailable),
        (google_exceptions.RetryError("gave up", cause=ConnectionError("refused")), BackendUnavailable),
        (auth_exceptions.DefaultCredentialsError("no adc"), BackendUnavailable),
        (auth_exceptions.RefreshError("expired"), BackendUnavailable),
        (requests.exceptions.ConnectionError("refused"), BackendUnavailable),
        (TimeoutError("slow"), BackendUnavailable),
        (ValueError("odd"), BigQueryError),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else value.__name__,
)
def test_it_maps_each_library_exception(error: Exception, expected: type[BigQueryError]) -> None:
    mapped = map_error(error)
    assert type(mapped) is expected
    assert not isinstance(mapped, google_exceptions.GoogleAPIError)


def test_it_names_the_error_underneath_nested_retries() -> None:
    inner = google_exceptions.RetryError("api retry", cause=requests.exceptions.ConnectionError("refused"))
    mapped = map_error(google_exceptions.RetryError("job retry", cause=inner))
    assert isinstance(mapped, BackendUnavailable)
    assert "ConnectionError" in str(mapped)


def test_it_keeps_only_the_first_line_of_a_message() -> None:
    mapped = map_error(google_exceptions.BadRequest("first line\nsecond line"))
    assert str(mapped) == "first line"


# --- the cached gateway ---------------------------------------------------------------------------
def test_it_caches_one_gateway_per_process() -> None:
    assert get_gateway() is get_gateway()


def test_it_builds_the_gateway_from_settings(settings: Any) -> None:
    gateway = get_gateway()
    assert gateway.project == settings.BIGQUERY_PROJECT
    assert gateway.timeout == settings.BIGQUERY_TIMEOUT_SECONDS
    assert gateway.location == settings.BIGQUERY_LOCATION
    assert gateway.client._connection.API_BASE_URL == settings.BIGQUERY_EMULATOR_HOST


def test_it_rebuilds_the_gateway_when_a_bigquery_setting_changes(settings: Any) -> None:
    before = get_gateway()
    settings.BIGQUERY_TIMEOUT_SECONDS = 7.5
    after = get_gateway()
    assert after is not before
    assert after.timeout == 7.5
    assert after.query("SELECT 1 AS n").rows == [{"n": 1}]


def test_it_bounds_every_call_with_the_retry_deadline(settings: Any) -> None:
    settings.BIGQUERY_RETRY_DEADLINE_SECONDS = 3.0
    gateway = get_gateway()
    assert gateway.retry.timeout == 3.0
    assert gateway.job_retry.timeout == 3.0


def test_it_refuses_a_client_with_an_unsafe_project() -> None:
    client = bigquery.Client(project="bad project", credentials=AnonymousCredentials(),
                             client_options=ClientOptions(api_endpoint="http://127.0.0.1:1"))  # fmt: skip
    with pytest.raises(InvalidIdentifier):
        BigQueryGateway(client, location="US", timeout=1, retry_deadline=1)


def test_it_exposes_no_google_exception_class_in_its_module_namespace() -> None:
    # The public exceptions are ours; callers never need google.api_core to catch them.
    for error in (NotFound, Conflict, InvalidInput, BackendUnavailable):
        assert issubclass(error, BigQueryError)
        assert not issubclass(error, google_exceptions.GoogleAPIError)
    assert client_module.map_error is map_error


@pytest.fixture
def counting_endpoint() -> Iterator[tuple[str, Callable[[], int]]]:
    """A loopback BigQuery stand-in that keeps connections alive, answers a dataset after 0.2 s, and
    counts the TCP connections clients opened."""
    opened: list[int] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as BigQuery's front end

        def setup(self) -> None:
            opened.append(1)
            super().setup()

        def do_GET(self) -> None:
            time.sleep(0.2)  # so the callers' requests overlap
            reference = {"projectId": "pool-project", "datasetId": "pooled"}
            body = json.dumps({"datasetReference": reference, "id": "pool-project:pooled"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", lambda: len(opened)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("pool", "at_most"), [(8, 8), (2, None)])
def test_it_keeps_as_many_connections_open_as_configured(
    counting_endpoint: tuple[str, Callable[[], int]], pool: int, at_most: int | None
) -> None:
    endpoint, connections = counting_endpoint
    with override_settings(
        BIGQUERY_EMULATOR_HOST=endpoint, BIGQUERY_PROJECT="pool-project", BIGQUERY_MAX_CONNECTIONS=pool
    ):
        gateway = build_gateway()
        with ThreadPoolExecutor(8) as pool_of_callers:
            for _ in range(3):  # three waves of 8 callers at once
                waves = [pool_of_callers.submit(gateway.get_dataset, "pooled") for _ in range(8)]
                assert all(wave.result().dataset_id == "pooled" for wave in waves)
    if at_most is not None:
        # Every wave after the first reuses the connections the pool kept.
        assert connections() <= at_most
    else:
        # A pool smaller than the callers drops connections after use, and the next wave reopens them.
        assert connections() > 8
