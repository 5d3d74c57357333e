"""The tenant tables, each declared once: fields give the columns, `table_spec` the layout.

Every column of the original system keeps its name, type and mode (`tests/tenants_app/
test_original_schema.py` checks it against ../shared/reference/original-schema.md).
"""

from __future__ import annotations

from django.db import models
from django.utils.timezone import now

from bigquery_backend.fields import RepeatedStringField
from bigquery_backend.models import BigQueryModel
from bigquery_backend.schema import TableSpec

# Dataset scopes: the central, protected `tenants` dataset, or one tenant's own GenAI-safe dataset.
CENTRAL = "central"
TENANT = "tenant"


class TenantStatus(models.TextChoices):
    ACTIVE = "ACTIVE"
    TRIAL = "TRIAL"
    SUSPENDED = "SUSPENDED"
    CANCELLED = "CANCELLED"
    DELETED = "DELETED"


# Tenants whose profile lets them work at all (keys accepted, runs scheduled and admitted); the
# subscription's state then decides what they may do. One rule for every service that asks.
WORKING_TENANT_STATUSES: tuple[str, ...] = (TenantStatus.ACTIVE, TenantStatus.TRIAL)
# Offboarded for good: no key, credential or run is ever taken again, and lists of live tenants omit them.
CLOSED_TENANT_STATUSES: tuple[str, ...] = (TenantStatus.CANCELLED, TenantStatus.DELETED)


class SubscriptionStatus(models.TextChoices):
    TRIAL = "TRIAL"
    ACTIVE = "ACTIVE"
    PAST_DUE = "PAST_DUE"
    SUSPENDED = "SUSPENDED"
    EXPIRED = "EXPIRED"
    CANCELLED = "CANCELLED"


class PlanName(models.TextChoices):
    STARTER = "STARTER"
    PROFESSIONAL = "PROFESSIONAL"
    SCALE = "SCALE"


class Provider(models.TextChoices):
    GCP = "GCP", "GCP"
    AWS = "AWS", "AWS"
    AZURE = "AZURE"
    OPENAI = "OPENAI", "OpenAI"
    ANTHROPIC = "ANTHROPIC"


class CredentialType(models.TextChoices):
    SERVICE_ACCOUNT = "SERVICE_ACCOUNT"
    ACCESS_KEY = "ACCESS_KEY"
    API_KEY = "API_KEY", "API key"
    OAUTH = "OAUTH", "OAuth"


class ValidationStatus(models.TextChoices):
    VALID = "VALID"
    INVALID = "INVALID"
    UNVERIFIED = "UNVERIFIED"


class RunState(models.TextChoices):
    """States of a scheduled run and its queue entry (one meaning everywhere)."""

    QUEUED = "QUEUED"  # waiting for a worker; `available_at` may hold it back (retry backoff)
    RUNNING = "RUNNING"  # claimed by a worker holding a lease
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"  # final: retries exhausted, or failed for good
    CANCELLED = "CANCELLED"


class RunTrigger(models.TextChoices):
    """What started a run: `trigger_type` of its run row and of its execution record."""

    SCHEDULE = "schedule"  # the scheduler, at a slot of the config's cron
    MANUAL = "manual"  # "run now" by a person or a key
    BACKFILL = "backfill"  # past slots enqueued again on request
    RETRY = "retry"  # a FAILED or CANCELLED run requeued


class DataQualityStatus(models.TextChoices):
    PASS = "PASS"  # noqa: S105 - a data-quality verdict, not a password
    WARNING = "WARNING"
    FAIL = "FAIL"


def _id_field(**kwargs: object) -> models.CharField:
    return models.CharField(max_length=128, **kwargs)


def _tenant_id_field() -> models.CharField:
    return models.CharField(max_length=64)


# --- central dataset ----------------------------------------------------------------------------------
class TenantProfile(BigQueryModel):
    tenant_id = models.CharField(max_length=64, primary_key=True)
    company_name = models.CharField(max_length=200)
    admin_email = models.EmailField(max_length=254)
    tenant_dataset_id = models.CharField(max_length=1024)
    status = models.CharField(max_length=16, choices=TenantStatus.choices)
    subscription_plan = models.CharField(max_length=32, choices=PlanName.choices, null=True, blank=True)
    created_at = models.DateTimeField(default=now)
    updated_at = models.DateTimeField(null=True, blank=True)

    table_spec = TableSpec(scope=CENTRAL, description="Tenant registry", clustering=("tenant_id",))

    class Meta(BigQueryModel.Meta):
        db_table = "tenant_profiles"
        verbose_name = "tenant profile"


class TenantApiKey(BigQueryModel):
    api_key_id = _id_field(primary_key=True)
    tenant_id = _tenant_id_field()
    api_key_hash = models.CharField(max_length=64, help_text="sha256 hex of the key; lookups go by hash")
    encrypted_api_key = models.BinaryField(null=True, blank=True, help_text="KMS-encrypted copy of the key")
    scopes = RepeatedStringField()
    is_active = models.BooleanField(default=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    # Added by us (NULLABLE, so rows written by the original system still read).
    name = models.CharField(max_length=100, null=True, blank=True)
    key_prefix = models.CharField(max_length=32, null=True, blank=True, help_text="Shown instead of the key")
    created_by = models.CharField(max_length=254, null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.CharField(max_length=254, null=True, blank=True)
    revoked_reason = models.CharField(max_length=500, null=True, blank=True)
    replaced_by_key_id = models.CharField(max_length=128, null=True, blank=True, help_text="Set by rotation")

    table_spec = TableSpec(
        scope=CENTRAL,
        description="API keys: hashes and KMS-encrypted copies",
        clustering=("api_key_hash", "tenant_id"),
    )

    class Meta(BigQueryModel.Meta):
        db_table = "tenant_api_keys"
        verbose_name = "API key"


class TenantCloudCredential(BigQueryModel):
    credential_id = _id_field(primary_key=True)
    tenant_id = _tenant_id_field()
    provider = models.CharField(max_length=16, choices=Provider.choices)
    encrypted_credentials = models.BinaryField(help_text="KMS-encrypted credential payload")
    created_by_user_id = models.CharField(max_length=254, null=True, blank=True)
    updated_by_user_id = models.CharField(max_length=254, null=True, blank=True)
    created_at = models.DateTimeField(default=now)
    updated_at = models.DateTimeField(null=True, blank=True)
    # Added by us (NULLABLE, so rows written by the original system still read).
    credential_name = models.CharField(max_length=100, null=True, blank=True)
    credential_type = models.CharField(max_length=32, choices=CredentialType.choices, null=True, blank=True)
    fingerprint = models.CharField(max_length=64, null=True, blank=True, help_text="Short hash, safe to show")
    validation_status = models.CharField(
        max_length=16, choices=ValidationStatus.choices, null=True, blank=True
    )
    is_active = models.BooleanField(null=True, blank=True)

    table_spec = TableSpec(
        scope=CENTRAL, description="KMS-encrypted cloud credentials", clustering=("tenant_id", "provider")
    )

    class Meta(BigQueryModel.Meta):
        db_table = "tenant_cloud_credentials"
        verbose_name = "cloud credential"


class TenantSubscription(BigQueryModel):
    subscription_id = _id_field(primary_key=True)
    tenant_id = _tenant_id_field()
    plan_name = models.CharField(max_length=32, choices=PlanName.choices)
    status = models.CharField(max_length=16, choices=SubscriptionStatus.choices)
    daily_limit = models.BigIntegerField()
    monthly_limit = models.BigIntegerField()
    concurrent_limit = models.BigIntegerField()
    max_pipelines_per_day = models.BigIntegerField(null=True, blank=True)
    trial_end_date = models.DateField(null=True, blank=True)
    subscription_end_date = models.DateField(null=True, blank=True)
    created_at = models.DateTimeField(default=now)
    updated_at = models.DateTimeField(null=True, blank=True)
    # Added by us (NULLABLE: empty means the plan's figure from tenants_app/services/plans.py).
    max_providers = models.BigIntegerField(null=True, blank=True)
    api_calls_per_minute = models.BigIntegerField(null=True, blank=True)
    api_calls_per_hour = models.BigIntegerField(null=True, blank=True)

    table_spec = TableSpec(
        scope=CENTRAL, description="Subscription plans and limits", clustering=("tenant_id",)
    )

    class Meta(BigQueryModel.Meta):
        db_table = "tenant_subscriptions"
        verbose_name = "subscription"


class TenantUsageQuota(BigQueryModel):
    usage_id = _id_field(primary_key=True, help_text="{tenant_id}_{YYYYMMDD}")
    tenant_id = _tenant_id_field()
    usage_date = models.DateField()
    pipelines_run_today = models.BigIntegerField(default=0)
    pipelines_succeeded_today = models.BigIntegerField(default=0)
    pipelines_failed_today = models.BigIntegerField(default=0)
    pipelines_run_month = models.BigIntegerField(default=0)
    concurrent_pipelines_running = models.BigIntegerField(default=0)
    daily_limit = models.BigIntegerField()
    monthly_limit = models.BigIntegerField(null=True, blank=True)
    concurrent_limit = models.BigIntegerField(null=True, blank=True)
    max_concurrent_reached = models.BigIntegerField(null=True, blank=True)
    last_pipeline_completed_at = models.DateTimeField(null=True, blank=True)
    last_updated = models.DateTimeField(default=now)
    created_at = models.DateTimeField(default=now)
    # Added by us (NULLABLE, so rows written by the original system still read).
    total_api_calls_today = models.BigIntegerField(null=True, blank=True, help_text="Flushed in batches")
    daily_warning_at = models.DateTimeField(null=True, blank=True, help_text="When 80% of the day was used")
    monthly_warning_at = models.DateTimeField(
        null=True, blank=True, help_text="When 80% of the month was used"
    )
    admission_id = models.CharField(
        max_length=64, null=True, blank=True, help_text="The last claim tick that admitted runs on it"
    )

    table_spec = TableSpec(
        scope=CENTRAL,
        description="Daily usage counters per tenant",
        partition_field="usage_date",
        clustering=("tenant_id", "usage_date"),
    )

    class Meta(BigQueryModel.Meta):
        db_table = "tenant_usage_quotas"
        verbose_name = "usage quota"


class TenantPipelineConfig(BigQueryModel):
    config_id = _id_field(primary_key=True)
    tenant_id = _tenant_id_field()
    provider = models.CharField(max_length=16, choices=Provider.choices)
    domain = models.CharField(max_length=200)
    pipeline_template = models.CharField(max_length=200)
    schedule_cron = models.CharField(max_length=200)
    timezone = models.CharField(max_length=64, default="UTC")
    is_active = models.BooleanField(default=True)
    next_run_time = models.DateTimeField(null=True, blank=True)
    last_run_time = models.DateTimeField(null=True, blank=True)
    last_run_status = models.CharField(max_length=32, null=True, blank=True)
    parameters = models.JSONField(null=True, blank=True)
    priority = models.BigIntegerField(default=5, help_text="1 = most urgent")
    created_at = models.DateTimeField(default=now)
    updated_at = models.DateTimeField(null=True, blank=True)
    # Added by us (NULLABLE, so rows written by the original system still read).
    created_by = models.CharField(max_length=254, null=True, blank=True)
    updated_by = models.CharField(max_length=254, null=True, blank=True)
    # The scheduler's claim (see tenants_app/services/scheduler.py): which run claimed the slots, when,
    # and the slots it claimed but has not yet confirmed as enqueued (empty once they are).
    scheduler_claim_id = models.CharField(max_length=64, null=True, blank=True)
    scheduler_claimed_at = models.DateTimeField(null=True, blank=True)
    scheduler_pending_slots = models.TextField(
        null=True, blank=True, help_text="Claimed slots not yet confirmed enqueued (UTC, comma-separated)"
    )

    table_spec = TableSpec(
        scope=CENTRAL, description="Pipeline schedules per tenant", clustering=("tenant_id", "is_active")
    )

    class Meta(BigQueryModel.Meta):
        db_table = "tenant_pipeline_configs"
        verbose_name = "pipeline config"


class TenantScheduledPipelineRun(BigQueryModel):
    run_id = _id_field(primary_key=True)
    config_id = _id_field()
    tenant_id = _tenant_id_field()
    pipeline_id = models.CharField(max_length=200)
    state = models.CharField(max_length=32, choices=RunState.choices)
    scheduled_time = models.DateTimeField()
    priority = models.BigIntegerField(default=5, help_text="1 = most urgent")
    parameters = models.JSONField(null=True, blank=True)
    pipeline_logging_id = models.CharField(max_length=128, null=True, blank=True)
    retry_count = models.BigIntegerField(default=0)
    max_retries = models.BigIntegerField(default=3)
    completed_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    error_message = models.TextField(null=True, blank=True)
    created_at = models.DateTimeField(default=now)
    # Added by us (NULLABLE, so rows written by the original system still read).
    started_at = models.DateTimeField(null=True, blank=True)
    worker_id = models.CharField(max_length=200, null=True, blank=True)
    # What started the run (schedule, manual, backfill, retry; NULL on rows written before = schedule)
    # and who (config:<id> for the scheduler, user:<name> or apikey:<id> for a person or a key).
    trigger_type = models.CharField(max_length=32, choices=RunTrigger.choices, null=True, blank=True)
    trigger_by = models.CharField(max_length=254, null=True, blank=True)

    table_spec = TableSpec(
        scope=CENTRAL,
        description="Scheduled pipeline runs",
        partition_field="scheduled_time",
        clustering=("tenant_id", "state", "config_id"),
    )

    class Meta(BigQueryModel.Meta):
        db_table = "tenant_scheduled_pipeline_runs"
        verbose_name = "scheduled pipeline run"


class TenantPipelineExecutionQueue(BigQueryModel):
    run_id = _id_field(primary_key=True)
    tenant_id = _tenant_id_field()
    pipeline_id = models.CharField(max_length=200)
    state = models.CharField(max_length=32, choices=RunState.choices)
    scheduled_time = models.DateTimeField()
    priority = models.BigIntegerField(default=5, help_text="1 = most urgent")
    added_at = models.DateTimeField(default=now)
    processing_started_at = models.DateTimeField(null=True, blank=True)
    # Added by us (NULLABLE, so rows written by the original system still read).
    config_id = models.CharField(max_length=128, null=True, blank=True)
    available_at = models.DateTimeField(null=True, blank=True, help_text="Not claimable before (backoff)")
    lease_owner = models.CharField(max_length=200, null=True, blank=True, help_text="Worker holding it")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempt = models.BigIntegerField(null=True, blank=True, help_text="1 for the first claim")
    usage_date = models.DateField(null=True, blank=True, help_text="Usage row holding its concurrent slot")
    lease_credential = models.CharField(
        max_length=200,
        null=True,
        blank=True,
        help_text="Credential holding the lease: api_key:<id> or token:<id>",
    )
    tick_id = models.CharField(
        max_length=64, null=True, blank=True, help_text="The last claim or report tick that wrote it"
    )
    tenant_rows = models.JSONField(
        null=True,
        blank=True,
        help_text="Rows its reports made for the tenant's dataset, until they are written there",
    )

    table_spec = TableSpec(
        scope=CENTRAL,
        description="Priority queue drained by pipeline workers",
        partition_field="scheduled_time",
        clustering=("state", "priority", "tenant_id"),
    )

    class Meta(BigQueryModel.Meta):
        db_table = "tenant_pipeline_execution_queue"
        verbose_name = "execution queue entry"
        verbose_name_plural = "execution queue"


# --- per-tenant dataset: operational data only, never a credential ---------------------------------
class TenantPipelineRun(BigQueryModel):
    pipeline_logging_id = _id_field(primary_key=True)
    tenant_id = _tenant_id_field()
    pipeline_id = models.CharField(max_length=200)
    status = models.CharField(max_length=32)
    trigger_type = models.CharField(max_length=32, null=True, blank=True)
    trigger_by = models.CharField(max_length=254, null=True, blank=True)
    user_id = models.CharField(max_length=254, null=True, blank=True)
    start_time = models.DateTimeField()
    end_time = models.DateTimeField(null=True, blank=True)
    duration_ms = models.BigIntegerField(null=True, blank=True)
    run_date = models.DateField(null=True, blank=True)
    parameters = models.JSONField(null=True, blank=True)
    run_metadata = models.JSONField(null=True, blank=True)
    error_message = models.TextField(null=True, blank=True)

    table_spec = TableSpec(
        scope=TENANT,
        description="Pipeline executions",
        partition_field="start_time",
        clustering=("tenant_id", "pipeline_id", "status"),
    )

    class Meta(BigQueryModel.Meta):
        db_table = "tenant_pipeline_runs"
        verbose_name = "pipeline run"


class TenantStepLog(BigQueryModel):
    step_logging_id = _id_field(primary_key=True)
    tenant_id = _tenant_id_field()
    pipeline_logging_id = _id_field()
    step_name = models.CharField(max_length=200)
    step_type = models.CharField(max_length=64)
    step_index = models.BigIntegerField()
    status = models.CharField(max_length=32)
    start_time = models.DateTimeField()
    end_time = models.DateTimeField(null=True, blank=True)
    duration_ms = models.BigIntegerField(null=True, blank=True)
    rows_processed = models.BigIntegerField(null=True, blank=True)
    error_message = models.TextField(null=True, blank=True)
    user_id = models.CharField(max_length=254, null=True, blank=True)
    metadata = models.JSONField(null=True, blank=True)

    table_spec = TableSpec(
        scope=TENANT,
        description="Step-by-step execution logs",
        partition_field="start_time",
        clustering=("pipeline_logging_id", "status"),
    )

    class Meta(BigQueryModel.Meta):
        db_table = "tenant_step_logs"
        verbose_name = "step log"


class TenantDqResult(BigQueryModel):
    dq_result_id = _id_field(primary_key=True)
    pipeline_logging_id = _id_field()
    tenant_id = _tenant_id_field()
    target_table = models.CharField(max_length=1024)
    dq_config_id = _id_field()
    executed_at = models.DateTimeField()
    expectations_passed = models.BigIntegerField()
    expectations_failed = models.BigIntegerField()
    failed_expectations = models.JSONField(null=True, blank=True)
    overall_status = models.CharField(max_length=16, choices=DataQualityStatus.choices)
    user_id = models.CharField(max_length=254, null=True, blank=True)
    ingestion_date = models.DateField()

    table_spec = TableSpec(
        scope=TENANT,
        description="Data-quality validation results",
        partition_field="ingestion_date",
        clustering=("tenant_id", "target_table", "overall_status"),
    )

    class Meta(BigQueryModel.Meta):
        db_table = "tenant_dq_results"
        verbose_name = "data-quality result"


class AuditLogEntry(BigQueryModel):
    """One change made through the portal, the API or a command: append-only, never a secret."""

    audit_id = _id_field(primary_key=True)
    occurred_at = models.DateTimeField(default=now)
    actor = models.CharField(max_length=254, help_text="user:<name>, apikey:<id> or system:<command>")
    actor_type = models.CharField(max_length=16, help_text="staff, tenant_key or system")
    source = models.CharField(max_length=16, help_text="portal, api or command")
    action = models.CharField(max_length=64, help_text="What was done, e.g. tenant.suspend")
    tenant_id = models.CharField(max_length=64, null=True, blank=True)
    target_type = models.CharField(max_length=64, null=True, blank=True)
    target_id = models.CharField(max_length=200, null=True, blank=True)
    before_values = models.JSONField(
        null=True, blank=True, help_text="Changed fields before, secrets removed"
    )
    after_values = models.JSONField(null=True, blank=True, help_text="Changed fields after, secrets removed")
    request_id = models.CharField(max_length=64, null=True, blank=True)

    table_spec = TableSpec(
        scope=CENTRAL,
        description="Append-only audit trail of changes (no secrets)",
        partition_field="occurred_at",
        clustering=("tenant_id", "action"),
    )

    class Meta(BigQueryModel.Meta):
        db_table = "audit_log"
        verbose_name = "audit log entry"
        verbose_name_plural = "audit log"


class WebhookDeliveryStatus(models.TextChoices):
    PENDING = "PENDING"  # to be (re)tried at `next_attempt_at`
    DELIVERED = "DELIVERED"  # the endpoint answered 2xx
    FAILED = "FAILED"  # gave up: attempts exhausted, or the endpoint is gone


class TenantWebhookEndpoint(BigQueryModel):
    """Where a tenant's events are POSTed, signed with the endpoint's secret (services/webhooks.py)."""

    endpoint_id = _id_field(primary_key=True)
    tenant_id = _tenant_id_field()
    url = models.CharField(max_length=2048)
    description = models.CharField(max_length=200, null=True, blank=True)
    event_types = RepeatedStringField(help_text="Events sent here; empty means every event")
    encrypted_secret = models.BinaryField(help_text="KMS-encrypted signing secret")
    secret_prefix = models.CharField(max_length=32, help_text="Shown instead of the secret")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=now)
    created_by = models.CharField(max_length=254, null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    deleted_by = models.CharField(max_length=254, null=True, blank=True)

    table_spec = TableSpec(
        scope=CENTRAL, description="Webhook endpoints per tenant", clustering=("tenant_id", "is_active")
    )

    class Meta(BigQueryModel.Meta):
        db_table = "tenant_webhook_endpoints"
        verbose_name = "webhook endpoint"


class TenantWebhookDelivery(BigQueryModel):
    """One event for one endpoint: its signed body, attempts so far and the last outcome."""

    delivery_id = _id_field(primary_key=True)
    endpoint_id = _id_field()
    tenant_id = _tenant_id_field()
    event_id = _id_field()
    event_type = models.CharField(max_length=64)
    body = models.TextField(help_text="The JSON document POSTed (the same bytes on every attempt)")
    status = models.CharField(max_length=16, choices=WebhookDeliveryStatus.choices)
    attempts = models.BigIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    response_status = models.BigIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=now)

    table_spec = TableSpec(
        scope=CENTRAL,
        description="Webhook delivery log",
        partition_field="created_at",
        clustering=("tenant_id", "endpoint_id", "status"),
    )

    class Meta(BigQueryModel.Meta):
        db_table = "tenant_webhook_deliveries"
        verbose_name = "webhook delivery"
        verbose_name_plural = "webhook deliveries"


# The original system's 8 central tables, then ours: the audit log and the webhook tables.
CENTRAL_MODELS: tuple[type[BigQueryModel], ...] = (
    TenantProfile,
    TenantApiKey,
    TenantCloudCredential,
    TenantSubscription,
    TenantUsageQuota,
    TenantPipelineConfig,
    TenantScheduledPipelineRun,
    TenantPipelineExecutionQueue,
    AuditLogEntry,
    TenantWebhookEndpoint,
    TenantWebhookDelivery,
)
TENANT_MODELS: tuple[type[BigQueryModel], ...] = (TenantPipelineRun, TenantStepLog, TenantDqResult)


# --- Django's own database (not BigQuery) ---------------------------------------------------------------
class AdminApiToken(models.Model):
    """A staff member's token for the admin API; only its sha256 hash is stored."""

    user = models.ForeignKey("auth.User", on_delete=models.CASCADE, related_name="admin_api_tokens")
    name = models.CharField(max_length=100)
    token_hash = models.CharField(max_length=64, unique=True)
    token_prefix = models.CharField(max_length=32, help_text="Shown instead of the token")
    created_at = models.DateTimeField(default=now)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "admin API token"

    def __str__(self) -> str:
        return f"{self.token_prefix}… ({self.name})"


class IdempotencyRecord(models.Model):
    """The first response to a request sent with an `Idempotency-Key`, replayed for its repeats."""

    principal = models.CharField(max_length=200, help_text="Who sent it: user or tenant key id")
    key = models.CharField(max_length=200)
    request_fingerprint = models.CharField(max_length=64, help_text="sha256 of method, path and body")
    status_code = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Empty while in progress")
    # Encrypted with KMS: a creation response may hold a new API key, shown again only on a replay.
    encrypted_response = models.BinaryField(null=True, blank=True)
    created_at = models.DateTimeField(default=now)

    class Meta:
        verbose_name = "idempotency record"
        constraints = [models.UniqueConstraint(fields=["principal", "key"], name="idempotency_unique_key")]

    def __str__(self) -> str:
        return f"{self.principal} {self.key}"
