"""Log lines: JSON or plain with request and tenant ids, one access line per request, secrets masked."""

from __future__ import annotations

import io
import logging
import logging.config
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import connection
from django.test import Client
from google.auth import _helpers as google_auth_helpers
from rest_framework.test import APIClient

from convergence.log_config import (
    PAYLOAD_LOGGERS,
    ContextFilter,
    PlainFormatter,
    RedactSecretsFilter,
    logging_config,
    masked_parts,
    redact_secrets,
)
from tenants_app.log_context import (
    ContextThreadPoolExecutor,
    bind_log_context,
    command_log_context,
    current_log_context,
    log_context,
)
from tenants_app.services.bootstrap import bigquery_bootstrap
from tests.support.log_capture import shipped_logs

logger = logging.getLogger("tenants_app.tests.logging")


def new_key() -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return "cvg_live_" + "".join(secrets.choice(alphabet) for _ in range(40))


def pem_block() -> str:
    body = secrets.token_urlsafe(120).replace("-", "+").replace("_", "/")
    return f"-----BEGIN PRIVATE KEY-----\n{body[:64]}\n{body[64:]}\n-----END PRIVATE KEY-----\n"


# --- the redactor: planted secrets ------------------------------------------------------------------------
def test_it_masks_a_planted_key_in_the_message_its_arguments_and_the_exception() -> None:
    key = new_key()

    with shipped_logs() as logs:
        logger.info("issued %s for %s", key, "acme")
        logger.warning(f"inline {key}")
        try:
            raise RuntimeError(f"refused {key}")
        except RuntimeError:
            logger.exception("could not verify")

    # The raw capture sees the key: the check below would catch a leak.
    assert logs.raw_text().count(key) == 3
    assert key not in logs.text()
    assert key[9:] not in logs.text()
    entries = logs.entries()
    assert [e["message"] for e in entries] == [
        "issued [redacted] for acme",
        "inline [redacted]",
        "could not verify",
    ]
    assert "RuntimeError: refused [redacted]" in entries[2]["exception"]


def test_it_masks_private_keys_headers_and_secret_named_fields_but_keeps_identifiers() -> None:
    pem = pem_block()
    aws_secret = secrets.token_urlsafe(30)
    bearer = secrets.token_urlsafe(24)
    api_key = new_key()
    text = (
        f"payload={{'private_key': {pem!r}, 'secret_access_key': '{aws_secret}', 'private_key_id': 'pk1'}} "
        f'json={{"client_secret": "{aws_secret}", "key_prefix": "cvg_live_Ab12Cd", "api_key_id": "key_7"}} '
        f"headers Authorization: Bearer {bearer} X-API-Key: {api_key} "
        f"raw {pem} url /x?token={bearer}&page=2 sk-proj-{bearer}\n"
        f"{{'HTTP_COOKIE': 'theme=dark; sessionid={aws_secret}', 'HTTP_X_API_KEY': '{api_key}'}}"
    )

    masked = redact_secrets(text)

    for secret in (pem.splitlines()[1], pem.splitlines()[2], aws_secret, bearer, api_key[9:]):
        assert secret not in masked
    assert "BEGIN PRIVATE KEY" not in masked
    assert '"key_prefix": "cvg_live_Ab12Cd"' in masked  # 6 characters: a display prefix, not a key
    assert '"api_key_id": "key_7"' in masked
    assert "&page=2" in masked


def test_it_masks_a_pem_block_cut_short_to_the_end_of_the_line() -> None:
    pem = pem_block()
    cut = pem[:90]

    masked = redact_secrets(f"bad key file: {cut}")

    assert masked == "bad key file: [redacted]"


def test_it_drops_a_line_it_cannot_check_rather_than_raise() -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no text")

    bad_format = logging.LogRecord("x", logging.INFO, __file__, 1, "%s %s", ("only one",), None)
    unprintable = logging.LogRecord("x", logging.INFO, __file__, 1, Unprintable(), None, None)

    assert RedactSecretsFilter().filter(bad_format) is True
    assert RedactSecretsFilter().filter(unprintable) is True
    assert "only one" in masked_parts(bad_format)[0]  # the raw parts, masked
    assert masked_parts(unprintable)[0].startswith("[log line dropped")


def test_it_leaves_the_record_as_logged_for_other_handlers() -> None:
    key = new_key()
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "issued %s", (key,), None)

    RedactSecretsFilter().filter(record)

    assert record.getMessage() == f"issued {key}"
    assert masked_parts(record)[0] == "issued [redacted]"


# --- JSON lines -----------------------------------------------------------------------------------------
def test_it_writes_one_json_object_per_line_with_the_context() -> None:
    with shipped_logs() as logs:
        logger.info("outside")
        with log_context(request_id="req-12345678", actor="user:root"):
            bind_log_context(tenant_id="acme_corp")
            logger.warning("inside %d", 42)
        logger.info("after")

    outside, inside, after = logs.entries()
    assert inside == {
        "time": inside["time"],
        "level": "WARNING",
        "logger": "tenants_app.tests.logging",
        "message": "inside 42",
        "request_id": "req-12345678",
        "tenant_id": "acme_corp",
        "actor": "user:root",
    }
    stamp = datetime.fromisoformat(inside["time"])
    assert stamp.utcoffset() == timedelta(0)
    assert outside["request_id"] is None
    assert after["request_id"] is None
    assert after["tenant_id"] is None


def test_it_never_ships_request_or_response_bodies_given_as_extra() -> None:
    secret = secrets.token_urlsafe(32)

    with shipped_logs() as logs:
        # What google-auth and google-api-core do at DEBUG: the body in `extra`, not in the message.
        logging.getLogger("google.auth.transport.requests").debug(
            "Making request...", extra={"httpRequest": {"method": "POST", "body": {"plaintext": secret}}}
        )

    (entry,) = logs.entries()
    assert entry["message"] == "Making request..."
    assert secret not in logs.text()


@pytest.mark.django_db
def test_it_logs_sql_statements_without_their_values() -> None:
    needle = f"needle-{secrets.token_hex(12)}"
    connection.force_debug_cursor = True
    try:
        with shipped_logs() as logs:
            User.objects.filter(username=needle).exists()
    finally:
        connection.force_debug_cursor = False

    assert needle in logs.raw_text()  # Django did log the value
    assert needle not in logs.text()
    assert any(
        'FROM "auth_user"' in e["message"] for e in logs.entries() if e["logger"] == "django.db.backends"
    )


# --- plain lines and settings ---------------------------------------------------------------------------
def test_it_writes_the_plain_format_with_request_and_tenant_ids() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactSecretsFilter())
    handler.setFormatter(PlainFormatter())
    record_logger = logging.getLogger("tenants_app.tests.plain")
    record_logger.addHandler(handler)
    record_logger.propagate = False
    try:
        with log_context(request_id="req-abcdefgh", tenant_id="acme"):
            record_logger.warning("key %s", new_key())
        record_logger.warning("no request")
    finally:
        record_logger.removeHandler(handler)
        record_logger.propagate = True

    first, second = stream.getvalue().splitlines()
    assert first.endswith("WARNING tenants_app.tests.plain [req-abcdefgh acme] key [redacted]")
    assert second.endswith("[- -] no request")


def test_it_refuses_an_unknown_format_or_level() -> None:
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        logging_config(log_format="xml", level="INFO")
    with pytest.raises(ValueError, match="LOG_LEVEL"):
        logging_config(log_format="json", level="LOUD")
    config = logging_config(log_format="json", level="warning")
    debug = logging_config(log_format="plain", level="DEBUG")
    assert config["root"]["level"] == "WARNING"
    # Body-writing loggers never go below INFO, and never below the root either.
    assert {config["loggers"][name]["level"] for name in PAYLOAD_LOGGERS} == {"WARNING"}
    assert {debug["loggers"][name]["level"] for name in PAYLOAD_LOGGERS} == {"INFO"}


def test_it_keeps_google_libraries_from_switching_their_lines_away_from_our_handler() -> None:
    root, google = logging.getLogger(), logging.getLogger("google")
    saved = (list(root.handlers), root.level, google.level, google.propagate, list(google.handlers))
    try:
        google.setLevel(logging.NOTSET)
        google.handlers.clear()
        assert not google_auth_helpers._logger_configured(google)

        logging.config.dictConfig(logging_config(log_format="json", level="INFO"))

        # What google-auth checks before it sets `propagate = False` on the whole `google` tree.
        assert google_auth_helpers._logger_configured(google)
        assert google.propagate is True
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        google.setLevel(saved[2])
        google.propagate = saved[3]
        google.handlers[:] = saved[4]


# --- context --------------------------------------------------------------------------------------------
def test_it_ends_what_was_bound_inside_a_context_with_it() -> None:
    with log_context(request_id="req-one-1234"):
        bind_log_context(tenant_id="acme", actor="apikey:k1")
        inside = dict(current_log_context())

    assert inside == {"request_id": "req-one-1234", "tenant_id": "acme", "actor": "apikey:k1"}
    assert dict(current_log_context()) == {}


def test_it_binds_only_plain_values() -> None:
    with log_context(request_id="req-two-1234"):
        bind_log_context(tenant_id="acme\n2026-01-01 ERROR forged line")
        bind_log_context(actor="x" * 200)
        bind_log_context(tenant_id=new_key())

        assert dict(current_log_context()) == {"request_id": "req-two-1234"}


def test_it_gives_a_command_run_its_actor_and_one_id() -> None:
    seen: list[dict[str, str]] = []

    class Command(BaseCommand):
        @command_log_context
        def handle(self, *args: object, **options: object) -> None:
            seen.append(dict(current_log_context()))

    Command().handle()
    Command().handle()

    assert [s["actor"] for s in seen] == ["system:test_logging"] * 2
    assert seen[0]["request_id"].startswith("cmd-")
    assert seen[0]["request_id"] != seen[1]["request_id"]
    assert dict(current_log_context()) == {}


# --- the middleware -------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_it_logs_one_access_line_with_the_urls_tenant_and_no_query_values() -> None:
    key = new_key()

    with shipped_logs() as logs:
        response = APIClient().get(
            f"/api/v1/tenants/acme_corp/keys?token={key}&page=2", HTTP_X_REQUEST_ID="req-from-client-1"
        )

    assert response.status_code in {401, 403}
    assert response["X-Request-ID"] == "req-from-client-1"
    entries = logs.entries()
    (access,) = [e for e in entries if e["logger"] == "convergence.access"]
    assert access["path"] == "/api/v1/tenants/acme_corp/keys?token&page"
    assert (access["method"], access["status"]) == ("GET", response.status_code)
    assert (access["request_id"], access["tenant_id"]) == ("req-from-client-1", "acme_corp")
    assert isinstance(access["duration_ms"], float)
    assert all(e["request_id"] == "req-from-client-1" for e in entries)
    assert key not in logs.raw_text()
    assert dict(current_log_context()) == {}


@pytest.mark.django_db
def test_it_refuses_a_key_offered_as_the_request_id() -> None:
    key = new_key()

    with shipped_logs() as logs:
        response = APIClient().get("/healthz", HTTP_X_REQUEST_ID=key)

    assert response["X-Request-ID"] != key
    assert len(response["X-Request-ID"]) == 32
    assert {entry["request_id"] for entry in logs.entries()} == {response["X-Request-ID"]}


def test_it_tags_a_commands_lines_with_its_actor_and_run_id(central_dataset: str) -> None:
    bigquery_bootstrap()

    with shipped_logs() as logs:
        call_command("cleanup_orphaned_runs", stdout=io.StringIO())

    entries = logs.entries()
    assert entries  # its BigQuery calls log at DEBUG at least
    assert {entry["actor"] for entry in entries} == {"system:cleanup_orphaned_runs"}
    (run_id,) = {entry["request_id"] for entry in entries}
    assert run_id.startswith("cmd-")


@pytest.mark.django_db
def test_it_tags_a_response_made_before_the_view_by_another_middleware(settings: Any) -> None:
    settings.API_MAX_BODY_BYTES = 100

    with shipped_logs() as logs:
        response = APIClient().post("/api/v1/me/keys", {"name": "x" * 200}, format="json")

    assert response.status_code == 413
    (access,) = [e for e in logs.entries() if e["logger"] == "convergence.access"]
    assert (access["status"], access["request_id"]) == (413, response["X-Request-ID"])


@pytest.mark.django_db
def test_it_still_tags_requests_without_the_outer_middleware(settings: Any) -> None:
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if not m.endswith("RequestLogMiddleware")]

    with shipped_logs() as logs:
        response = APIClient().get("/api/v1/tenants/acme_corp/keys", HTTP_X_REQUEST_ID="req-inner-only")

    assert response["X-Request-ID"] == "req-inner-only"
    (access,) = [e for e in logs.entries() if e["logger"] == "convergence.access"]
    assert (access["request_id"], access["tenant_id"]) == ("req-inner-only", "acme_corp")


@pytest.mark.django_db
def test_it_names_the_portal_user_on_the_lines_a_portal_view_writes(central_dataset: str) -> None:
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "x"))
    connection.force_debug_cursor = True
    try:
        with shipped_logs() as logs:
            # A tenant page: its BigQuery lookup logs (urllib3) after the login check.
            client.get("/admin/tenants/t_nobody_here/")
    finally:
        connection.force_debug_cursor = False

    entries = logs.entries()
    loaded = next(i for i, e in enumerate(entries) if '"auth_user"' in e["message"])
    main = threading.get_ident()
    during_view = [
        e
        for e, raw in zip(entries[loaded + 1 :], logs.raw.lines[loaded + 1 :], strict=True)
        if e["logger"] != "convergence.access" and raw.thread == main
    ]
    assert during_view
    assert {e["actor"] for e in during_view} == {"user:root"}
    assert {e["tenant_id"] for e in during_view} == {"t_nobody_here"}


def test_it_runs_pool_tasks_in_the_submitters_context() -> None:
    def seen() -> dict[str, str]:
        logger.info("in a pool thread")
        return dict(current_log_context())

    with shipped_logs() as logs, log_context(request_id="req-pool-1234", tenant_id="acme"):
        with ContextThreadPoolExecutor(max_workers=2) as pool:
            inside = [pool.submit(seen) for _ in range(3)]
        with ThreadPoolExecutor(max_workers=1) as plain:
            outside = plain.submit(seen)

    assert [f.result() for f in inside] == [{"request_id": "req-pool-1234", "tenant_id": "acme"}] * 3
    assert outside.result() == {}  # what a plain pool does: why the context one exists
    assert [e["request_id"] for e in logs.entries()] == ["req-pool-1234"] * 3 + [None]
