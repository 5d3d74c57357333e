"""Webhooks and emails: signed events to a real receiver, retries on an injected clock, secrets kept."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest
from django.core import mail

from bigquery_backend.observers import add_job_observer, remove_job_observer
from tenants_app.metrics import WEBHOOK_DELIVERIES
from tenants_app.models import (
    AuditLogEntry,
    RunState,
    SubscriptionStatus,
    TenantApiKey,
    TenantScheduledPipelineRun,
    TenantSubscription,
    TenantWebhookDelivery,
    TenantWebhookEndpoint,
    WebhookDeliveryStatus,
)
from tenants_app.repositories import central_repository
from tenants_app.secrets import redact_secrets
from tenants_app.services.errors import ValidationFailed
from tenants_app.services.notifications import (
    API_KEY_EXPIRING,
    QUOTA_EXCEEDED,
    QUOTA_WARNING,
    RUN_FAILED,
    TRIAL_ENDING,
    notifications_daily_scan,
    notifications_deliver,
    notify,
    notify_quota_usage,
    notify_run_failed,
)
from tenants_app.services.webhooks import (
    webhook_endpoint_create,
    webhook_endpoint_delete,
    webhook_endpoint_list,
    webhook_endpoint_send_test,
)
from tenants_app.timestamps import api_timestamp
from tenants_app.webhook_signature import SIGNATURE_HEADER, WebhookSignatureError, webhook_verify
from tests.support.webhook_receiver import Receiver, webhook_receiver
from tests.tenants_app.services.schedules import add_tenant

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _local_receivers(central: str, settings: pytest.FixtureRequest) -> Iterator[None]:
    settings.WEBHOOK_ALLOW_LOCALHOST = True  # type: ignore[attr-defined]
    settings.WEBHOOK_RETRY_BASE_SECONDS = 30  # type: ignore[attr-defined]
    settings.WEBHOOK_MAX_ATTEMPTS = 4  # type: ignore[attr-defined]
    yield
    # The module shares its tables: no retry of this test's (stopped) receivers in the next test.
    central_repository(TenantWebhookDelivery).update_where(
        {"status": WebhookDeliveryStatus.FAILED}, filters={"status": WebhookDeliveryStatus.PENDING}
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as started:
        yield started


def failed_run(tenant_id: str) -> TenantScheduledPipelineRun:
    return TenantScheduledPipelineRun(
        run_id=f"{tenant_id}_run1",
        config_id=f"{tenant_id}_c0001",
        tenant_id=tenant_id,
        pipeline_id="daily_costs",
        state=RunState.FAILED,
        scheduled_time=T0,
        retry_count=3,
        error_message="BigQuery said no",
    )


def deliveries(tenant_id: str) -> list[TenantWebhookDelivery]:
    return central_repository(TenantWebhookDelivery).list(filters={"tenant_id": tenant_id})


def counted(outcome: str) -> float:
    return WEBHOOK_DELIVERIES.labels(outcome=outcome)._value.get()


# --- the signed event ------------------------------------------------------------------------------------
def test_it_delivers_a_signed_run_failed_event_that_the_receiver_verifies(receiver: Receiver) -> None:
    tenant_id = add_tenant()
    created = webhook_endpoint_create(tenant_id=tenant_id, url=receiver.url, created_by="user:ops")
    delivered_before = counted("delivered")

    notify_run_failed(run=failed_run(tenant_id))
    report = notifications_deliver(now=T0)

    assert report.events == 1
    [request] = receiver.received
    timestamp = webhook_verify(
        secret=created.secret, body=request.body, header=request.headers[SIGNATURE_HEADER], now=T0.timestamp()
    )
    assert timestamp == int(T0.timestamp())
    event = json.loads(request.body)
    assert (event["type"], event["tenant_id"], event["data"]["run_id"]) == (
        RUN_FAILED,
        tenant_id,
        f"{tenant_id}_run1",
    )
    # Instants in an event body are written as the API writes them (tenants_app/timestamps.py).
    assert event["created"] == api_timestamp(event["created"])
    assert event["created"].endswith("Z")
    assert event["data"]["scheduled_time"] == api_timestamp(event["data"]["scheduled_time"])
    [row] = deliveries(tenant_id)
    assert (row.status, row.attempts, row.response_status) == (WebhookDeliveryStatus.DELIVERED, 1, 200)
    assert counted("delivered") == delivered_before + 1
    [email] = mail.outbox
    assert email.to == ["ops@acme.example"]
    assert "failed" in email.subject
    assert f"{tenant_id}_run1" in email.body


def test_it_has_a_replayed_or_tampered_event_rejected(receiver: Receiver) -> None:
    tenant_id = add_tenant()
    created = webhook_endpoint_create(tenant_id=tenant_id, url=receiver.url, created_by="user:ops")
    notify_run_failed(run=failed_run(tenant_id))
    notifications_deliver(now=T0)
    [request] = receiver.received
    header = request.headers[SIGNATURE_HEADER]

    with pytest.raises(WebhookSignatureError, match="replay"):
        webhook_verify(secret=created.secret, body=request.body, header=header, now=T0.timestamp() + 301)
    tampered = request.body.replace(b"run.failed", b"run.passed")
    with pytest.raises(WebhookSignatureError, match="does not match"):
        webhook_verify(secret=created.secret, body=tampered, header=header, now=T0.timestamp())
    with pytest.raises(WebhookSignatureError, match="does not match"):
        webhook_verify(secret=created.secret + "x", body=request.body, header=header, now=T0.timestamp())


# --- retries ---------------------------------------------------------------------------------------------
def test_it_retries_with_exponential_backoff_on_the_injected_clock() -> None:
    tenant_id = add_tenant()
    with webhook_receiver(500, 503) as receiver:
        webhook_endpoint_create(tenant_id=tenant_id, url=receiver.url, created_by="user:ops")
        notify(event=QUOTA_WARNING, tenant_id=tenant_id, data={"period": "daily", "used": 80, "limit": 100})

        notifications_deliver(now=T0)
        [row] = deliveries(tenant_id)
        assert (row.status, row.attempts, row.next_attempt_at) == ("PENDING", 1, T0 + timedelta(seconds=30))

        notifications_deliver(now=T0 + timedelta(seconds=29))
        assert len(receiver.received) == 1  # not due yet

        notifications_deliver(now=T0 + timedelta(seconds=30))
        [row] = deliveries(tenant_id)
        assert (row.attempts, row.response_status, row.last_error) == (2, 503, "HTTP 503")
        assert row.next_attempt_at == T0 + timedelta(seconds=30 + 60)

        notifications_deliver(now=T0 + timedelta(seconds=90))
    [row] = deliveries(tenant_id)
    assert (row.status, row.attempts, row.delivered_at) == ("DELIVERED", 3, T0 + timedelta(seconds=90))
    bodies = {request.body for request in receiver.received}
    assert len(receiver.received) == 3
    assert len(bodies) == 1


def test_it_gives_up_after_the_last_attempt(settings: pytest.FixtureRequest) -> None:
    settings.WEBHOOK_MAX_ATTEMPTS = 2  # type: ignore[attr-defined]
    tenant_id = add_tenant()
    failed_before = counted("failed")
    with webhook_receiver(500, 500, 500) as receiver:
        webhook_endpoint_create(tenant_id=tenant_id, url=receiver.url, created_by="user:ops")
        notify(event=QUOTA_EXCEEDED, tenant_id=tenant_id, data={"period": "daily"})
        notifications_deliver(now=T0)
        notifications_deliver(now=T0 + timedelta(seconds=30))
        notifications_deliver(now=T0 + timedelta(hours=2))

    [row] = deliveries(tenant_id)
    assert (row.status, row.attempts, row.next_attempt_at) == ("FAILED", 2, None)
    assert len(receiver.received) == 2
    assert counted("failed") == failed_before + 1


def test_it_queues_events_without_any_bigquery_statement_and_writes_a_tick_in_one_insert(
    receiver: Receiver,
) -> None:
    tenant_id = add_tenant()
    webhook_endpoint_create(tenant_id=tenant_id, url=receiver.url, created_by="user:ops")
    webhook_endpoint_create(tenant_id=tenant_id, url=receiver.url + "/2", created_by="user:ops")
    statements: list[str] = []

    def observe(statement_class: str, seconds: float, outcome: str) -> None:
        statements.append(statement_class)

    add_job_observer(observe)
    try:
        for index in range(10):
            notify(event=QUOTA_WARNING, tenant_id=tenant_id, data={"index": index})
        queued = list(statements)
        notifications_deliver(now=T0)
    finally:
        remove_job_observer(observe)

    assert queued == []
    assert len(receiver.received) == 20
    assert statements.count("dml") == 1  # one INSERT for the tick's 20 deliveries
    assert len(mail.outbox) == 10


# --- what endpoints and events there are -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://93.184.216.34/hook", "https"),
        ("https://10.0.0.8/hook", "private"),
        ("https://169.254.169.254/latest/meta-data", "private"),
        ("https://[::ffff:192.168.1.1]/hook", "private"),
        ("https://user:pw@93.184.216.34/hook", "password"),
        ("ftp://93.184.216.34/hook", "https"),
        ("not a url", "spaces"),
    ],
)
def test_it_refuses_endpoint_urls_that_are_not_public_https(url: str, reason: str) -> None:
    tenant_id = add_tenant()

    with pytest.raises(ValidationFailed) as refused:
        webhook_endpoint_create(tenant_id=tenant_id, url=url, created_by="user:ops")

    assert list(refused.value.errors) == ["url"]
    assert reason in refused.value.errors["url"][0]


def test_it_refuses_localhost_unless_allowed(settings: pytest.FixtureRequest) -> None:
    settings.WEBHOOK_ALLOW_LOCALHOST = False  # type: ignore[attr-defined]
    tenant_id = add_tenant()

    for url in ("http://127.0.0.1:8080/hook", "https://127.0.0.1/hook", "https://localhost/hook"):
        with pytest.raises(ValidationFailed) as refused:
            webhook_endpoint_create(tenant_id=tenant_id, url=url, created_by="user:ops")
        assert list(refused.value.errors) == ["url"]
    created = webhook_endpoint_create(tenant_id=tenant_id, url="https://93.184.216.34/hook", created_by="u:o")
    assert created.endpoint.url == "https://93.184.216.34/hook"


def test_it_keeps_the_secret_out_of_rows_audit_logs_and_lists(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tenant_id = add_tenant()

    created = webhook_endpoint_create(tenant_id=tenant_id, url=receiver.url, created_by="user:ops")
    webhook_endpoint_send_test(
        tenant_id=tenant_id, endpoint_id=created.endpoint.endpoint_id, actor="user:ops"
    )
    notifications_deliver(now=T0)
    webhook_endpoint_delete(
        tenant_id=tenant_id, endpoint_id=created.endpoint.endpoint_id, deleted_by="user:ops"
    )

    secret = created.secret
    assert secret.startswith("cvg_whsec_")
    assert redact_secrets(f"secret {secret}") == "secret [redacted]"
    [stored] = central_repository(TenantWebhookEndpoint).list(filters={"tenant_id": tenant_id})
    assert secret.encode() not in bytes(stored.encrypted_secret)
    assert secret not in json.dumps([str(getattr(stored, f.name)) for f in stored._meta.concrete_fields])
    audit = central_repository(AuditLogEntry).list(filters={"tenant_id": tenant_id})
    assert {entry.action for entry in audit} == {"webhook.create", "webhook.delete"}
    assert secret not in json.dumps(
        [entry.after_values for entry in audit] + [e.before_values for e in audit]
    )
    assert secret not in caplog.text
    assert all(secret not in json.dumps(r.body) for r in deliveries(tenant_id))
    assert webhook_endpoint_list(tenant_id=tenant_id) == []


def test_it_sends_the_test_event_to_its_endpoint_only_and_emails_nobody(receiver: Receiver) -> None:
    tenant_id = add_tenant()
    with webhook_receiver() as other:
        created = webhook_endpoint_create(tenant_id=tenant_id, url=receiver.url, created_by="user:ops")
        webhook_endpoint_create(tenant_id=tenant_id, url=other.url, created_by="user:ops")

        webhook_endpoint_send_test(
            tenant_id=tenant_id, endpoint_id=created.endpoint.endpoint_id, actor="user:o"
        )
        notifications_deliver(now=T0)

    assert [json.loads(r.body)["type"] for r in receiver.received] == ["webhook.test"]
    assert other.received == []
    assert mail.outbox == []


@pytest.mark.parametrize(
    ("actor", "shown"),
    [("user:alice.smith", "staff"), ("apikey:key_123", "apikey:key_123"), (None, "system:unknown")],
)
def test_it_names_no_staff_member_in_the_test_event_a_tenant_receives(
    receiver: Receiver, actor: str | None, shown: str
) -> None:
    tenant_id = add_tenant()
    created = webhook_endpoint_create(tenant_id=tenant_id, url=receiver.url, created_by="user:ops")

    webhook_endpoint_send_test(tenant_id=tenant_id, endpoint_id=created.endpoint.endpoint_id, actor=actor)
    notifications_deliver(now=T0)

    [request] = receiver.received
    assert json.loads(request.body)["data"]["requested_by"] == shown
    assert b"alice" not in request.body


def test_it_sends_an_endpoint_only_the_events_it_subscribed_to(receiver: Receiver) -> None:
    tenant_id = add_tenant()
    webhook_endpoint_create(
        tenant_id=tenant_id, url=receiver.url, event_types=[RUN_FAILED], created_by="user:ops"
    )

    notify(event=QUOTA_WARNING, tenant_id=tenant_id, data={})
    notify_run_failed(run=failed_run(tenant_id))
    notifications_deliver(now=T0)

    assert [json.loads(r.body)["type"] for r in receiver.received] == [RUN_FAILED]
    assert len(mail.outbox) == 2  # the admin is emailed every event


def test_it_raises_quota_events_when_usage_crosses_80_and_100_percent(receiver: Receiver) -> None:
    tenant_id = add_tenant()
    webhook_endpoint_create(tenant_id=tenant_id, url=receiver.url, created_by="user:ops")

    notify_quota_usage(tenant_id=tenant_id, period="daily", used_before=70, used_after=79, limit=100)
    notify_quota_usage(tenant_id=tenant_id, period="daily", used_before=79, used_after=80, limit=100)
    notify_quota_usage(tenant_id=tenant_id, period="daily", used_before=80, used_after=99, limit=100)
    notify_quota_usage(tenant_id=tenant_id, period="monthly", used_before=95, used_after=100, limit=100)
    notifications_deliver(now=T0)

    events = [json.loads(r.body) for r in receiver.received]
    # Deliveries of a tick go out side by side: in any order.
    assert sorted((e["type"], e["data"]["period"]) for e in events) == sorted(
        [(QUOTA_WARNING, "daily"), (QUOTA_EXCEEDED, "monthly")]
    )


def test_it_notifies_trials_ending_in_3_days_and_keys_expiring_in_7(receiver: Receiver) -> None:
    tenant_id = add_tenant(subscription=SubscriptionStatus.TRIAL)
    central_repository(TenantSubscription).update_where(
        {"trial_end_date": date(2026, 6, 4)}, filters={"tenant_id": tenant_id}
    )
    for index, days in enumerate((7, 8)):
        central_repository(TenantApiKey).insert(
            TenantApiKey(
                api_key_id=f"{tenant_id}_k{index}",
                tenant_id=tenant_id,
                api_key_hash="0" * 64,
                scopes=["tenant:read"],
                is_active=True,
                key_prefix=f"cvg_test_k{index}",
                expires_at=T0 + timedelta(days=days, hours=1),
            )
        )
    webhook_endpoint_create(tenant_id=tenant_id, url=receiver.url, created_by="user:ops")

    notifications_daily_scan(now=T0)
    notifications_deliver(now=T0)

    events = [json.loads(r.body) for r in receiver.received if json.loads(r.body)["tenant_id"] == tenant_id]
    assert sorted((e["type"], e["data"].get("api_key_id")) for e in events) == [
        (API_KEY_EXPIRING, f"{tenant_id}_k0"),
        (TRIAL_ENDING, None),
    ]
    assert {email.subject for email in mail.outbox} >= {"Your trial ends on 2026-06-04"}
