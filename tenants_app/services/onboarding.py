"""Onboard a tenant: profile, subscription, usage row, dataset with tables and views, access, first key.

Every step looks at what exists before it writes, rows have deterministic ids and go in with
insert-if-absent MERGEs, and metadata calls treat "already exists" as done. So a run that failed at any
step (BigQuery or KMS down, process killed) is finished by running the same request again, which leaves
exactly one profile, one subscription, one usage row for the day, one dataset and one initial key.
The profile comes first: it records the details a repeat must give again, before any row carries a
plan's limits and before a dataset exists that no profile names. The API key comes last: a failure
before it leaves no key behind, and its presence marks a finished onboarding (a repeat then gets
AlreadyExists). Steps that depend on neither each other nor a failed step run side by side
(STEP_AFTER, tenants_app/task_graph.py), which brings an onboarding near its longest chain of calls.
Before the first write, the input and the checks of onboarding_checks.py refuse what would fail;
the dry run (`tenant_onboard_dryrun`) reports those same checks without writing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date
from functools import partial
from typing import NotRequired, TypedDict, Unpack

from django.utils import timezone
from google.cloud import bigquery

from bigquery_backend.client import BigQueryGateway, get_gateway
from bigquery_backend.exceptions import Conflict
from bigquery_backend.identifiers import quote_column, quote_table
from bigquery_backend.models import BigQueryModel
from bigquery_backend.schema import table_definition
from tenants_app.kms import KmsUnavailable, aad_for, get_kms
from tenants_app.models import (
    AuditLogEntry,
    SubscriptionStatus,
    TenantApiKey,
    TenantPipelineConfig,
    TenantProfile,
    TenantScheduledPipelineRun,
    TenantStatus,
    TenantSubscription,
    TenantUsageQuota,
)
from tenants_app.repositories import central_repository
from tenants_app.services.actors import ACTOR_FIELDS, actor_masked_sql
from tenants_app.services.api_key_scopes import INITIAL_API_KEY_SCOPES
from tenants_app.services.api_key_verification import bigquery_errors_translated
from tenants_app.services.api_keys import IssuedApiKey, api_key_create
from tenants_app.services.audit import AuditAction, audit_record
from tenants_app.services.bootstrap import CREATED, EXISTS, bigquery_bootstrap
from tenants_app.services.datasets import TENANT_ID_PATTERN, central_dataset, tenant_dataset
from tenants_app.services.errors import AlreadyExists, ServiceUnavailable, ValidationFailed
from tenants_app.services.onboarding_checks import (
    OnboardingReport,
    OnboardingRequest,
    TenantIdCheck,
    check_same_request,
    first_refused,
    initial_api_key_id,
    onboarding_checks_run,
    onboarding_request_clean,
    refuse,
)
from tenants_app.services.retries import is_retry_of_unknown_outcome
from tenants_app.task_graph import Task, run_tasks

logger = logging.getLogger(__name__)

# Steps in the order they run; `before_step` and the result use these names.
PROFILE = "profile"
SUBSCRIPTION = "subscription"
USAGE = "usage"
DATASET = "dataset"
VIEWS = "views"
READER_ACCESS = "reader_access"
API_KEY = "api_key"
ONBOARDING_STEPS: tuple[str, ...] = (PROFILE, SUBSCRIPTION, USAGE, DATASET, VIEWS, READER_ACCESS, API_KEY)
# The steps each one needs done first (see the module docstring); the others run side by side.
STEP_AFTER: dict[str, tuple[str, ...]] = {
    PROFILE: (),
    SUBSCRIPTION: (PROFILE,),
    USAGE: (PROFILE,),
    DATASET: (PROFILE,),
    VIEWS: (DATASET,),
    READER_ACCESS: (DATASET,),
    API_KEY: (SUBSCRIPTION, USAGE, VIEWS, READER_ACCESS),
}
# At most 4 steps run at once, each with at most 3 calls side by side (the dataset's tables, the
# views): never more than 6 threads. 1 runs every call one after another.
ONBOARDING_MAX_WORKERS = 4

INITIAL_KEY_NAME = "Initial key"
# Central tables a tenant may read its own rows of, through a view in its own dataset.
VIEW_MODELS: tuple[type[BigQueryModel], ...] = (TenantPipelineConfig, TenantScheduledPipelineRun)
_ACL_ATTEMPTS = 5


@dataclass
class OnboardingResult:
    """What the tenant has now, and which steps this run performed or found already done."""

    profile: TenantProfile
    subscription: TenantSubscription
    dataset_id: str
    # None when the initial key already existed: its plaintext was shown once, by an earlier run.
    api_key: IssuedApiKey | None
    api_key_already_issued: bool = False
    resumed: bool = False
    performed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def subscription_id_for(tenant_id: str) -> str:
    return f"{tenant_id}_subscription"


def usage_id_for(tenant_id: str, day: date) -> str:
    return f"{tenant_id}_{day:%Y%m%d}"


class OnboardingFields(TypedDict):
    """What a caller gives to onboard a tenant (onboarding_request_clean checks each field)."""

    tenant_id: str
    company_name: str
    admin_email: str
    # `plan` or its alias `subscription_plan` (the original system's name): both only with the same
    # value; neither gives DEFAULT_PLAN.
    plan: NotRequired[str | None]
    subscription_plan: NotRequired[str | None]
    created_by: str


def tenant_onboard_dryrun(**fields: Unpack[OnboardingFields]) -> OnboardingReport:
    """Every check the onboarding would make (onboarding_checks), each with its verdict; writes nothing.

    ValidationFailed for malformed input; an unknown plan is not malformed here but a failed check.
    """
    request = onboarding_request_clean(**fields, plan_must_exist=False)
    checks = onboarding_checks_run(request, max_workers=ONBOARDING_MAX_WORKERS)
    return OnboardingReport(tenant_id=request.tenant_id, plan=request.plan_name, checks=checks)


def tenant_onboard_validate(**fields: Unpack[OnboardingFields]) -> None:
    """Raise what `tenant_onboard` would refuse the same request with, before writing; writes nothing."""
    request = onboarding_request_clean(**fields)
    refused = first_refused(onboarding_checks_run(request, max_workers=ONBOARDING_MAX_WORKERS))
    if refused is not None:
        refuse(refused)


def tenant_onboard(
    *,
    before_step: Callable[[str], None] | None = None,
    max_workers: int = ONBOARDING_MAX_WORKERS,
    **fields: Unpack[OnboardingFields],
) -> OnboardingResult:
    """Create everything a new tenant needs, or finish an onboarding that failed half-way.

    `before_step(name)` is called in the step's thread just before it runs (tests inject failures).
    """
    request = onboarding_request_clean(**fields)
    run = _Run(request, profile=_checked_profile(request, max_workers=max_workers), max_workers=max_workers)
    with bigquery_errors_translated():
        steps = {
            step: Task(partial(run.do, step, before_step), after=STEP_AFTER[step])
            for step in ONBOARDING_STEPS
        }
        wrote = run_tasks(steps, max_workers=max_workers, thread_name_prefix="onboarding")
    run.performed = [step for step in ONBOARDING_STEPS if wrote[step]]
    run.skipped = [step for step in ONBOARDING_STEPS if not wrote[step]]
    # Both are set by their steps, which ran without raising.
    assert run.profile is not None
    assert run.subscription is not None
    result = OnboardingResult(
        profile=run.profile,
        subscription=run.subscription,
        dataset_id=request.dataset_id,
        api_key=run.api_key,
        api_key_already_issued=run.api_key_already_issued,
        resumed=run.resumed,
        performed=run.performed,
        skipped=run.skipped,
    )
    logger.info(
        "tenant %s onboarded by %s (plan %s); performed: %s; already done: %s",
        request.tenant_id,
        request.created_by,
        request.plan.name,
        ", ".join(result.performed) or "nothing",
        ", ".join(result.skipped) or "nothing",
    )
    return result


def _checked_profile(request: OnboardingRequest, *, max_workers: int) -> TenantProfile | None:
    """The checks the dry run reports: the profile of an unfinished onboarding, None for a new tenant."""
    checks = onboarding_checks_run(request, max_workers=max_workers)
    refused = first_refused(checks)
    if isinstance(refused, TenantIdCheck) and refused.profile and refused.initial_key:
        # Finished, but the initial key's answer may have been lost after it was stored: its audit
        # entry is the one write a refused repeat makes, if that entry is missing.
        with bigquery_errors_translated():
            _audit_onboarding_if_missing(request, refused.profile, refused.initial_key)
    if refused is not None:
        refuse(refused)
    tenant = checks[0]
    assert isinstance(tenant, TenantIdCheck)  # it passed, so it ran to its verdict
    return tenant.profile


# --- steps ------------------------------------------------------------------------------------------
class _Run:
    """State of one onboarding run; each step returns True when it wrote something."""

    def __init__(
        self, request: OnboardingRequest, *, profile: TenantProfile | None, max_workers: int
    ) -> None:
        self.request = request
        self.max_workers = max_workers
        self.profile = profile
        self.resumed = profile is not None
        self.subscription: TenantSubscription | None = None
        self.api_key: IssuedApiKey | None = None
        self.api_key_already_issued = False
        self.performed: list[str] = []
        self.skipped: list[str] = []

    def do(self, step: str, before_step: Callable[[str], None] | None = None) -> bool:
        if before_step is not None:
            before_step(step)
        return {
            PROFILE: self.profile_step,
            SUBSCRIPTION: self.subscription_step,
            USAGE: self.usage_step,
            DATASET: self.dataset_step,
            VIEWS: self.views_step,
            READER_ACCESS: self.reader_access_step,
            API_KEY: self.api_key_step,
        }[step]()

    def profile_step(self) -> bool:
        if self.profile is not None:
            return False
        request = self.request
        profile = TenantProfile(
            tenant_id=request.tenant_id,
            company_name=request.company_name,
            admin_email=request.admin_email,
            tenant_dataset_id=request.dataset_id,
            status=TenantStatus.ACTIVE,
            subscription_plan=request.plan.name,
            created_at=timezone.now(),
        )
        profiles = central_repository(TenantProfile)
        if profiles.upsert(profile, update_fields=[]) == 0:
            # A concurrent run of the same onboarding inserted it between our lookup and the MERGE.
            profile = profiles.get(request.tenant_id)
            differs = check_same_request(profile, request)
            if differs is not None:
                raise differs
            self.profile = profile
            return False
        self.profile = profile
        return True

    def subscription_step(self) -> bool:
        plan = self.request.plan
        subscription = TenantSubscription(
            subscription_id=subscription_id_for(self.request.tenant_id),
            tenant_id=self.request.tenant_id,
            plan_name=plan.name,
            status=SubscriptionStatus.ACTIVE,
            daily_limit=plan.daily_limit,
            monthly_limit=plan.monthly_limit,
            concurrent_limit=plan.concurrent_limit,
            max_pipelines_per_day=plan.daily_limit,
            created_at=timezone.now(),
        )
        subscriptions = central_repository(TenantSubscription)
        # Insert-if-absent first: the fresh path costs one MERGE, only a resume reads the row back.
        if subscriptions.upsert(subscription, update_fields=[]) == 1:
            self.subscription = subscription
            return True
        self.subscription = subscriptions.get(subscription.subscription_id)
        return False

    def usage_step(self) -> bool:
        plan = self.request.plan
        now = timezone.now()
        today = now.astimezone(UTC).date()
        usage = TenantUsageQuota(
            usage_id=usage_id_for(self.request.tenant_id, today),
            tenant_id=self.request.tenant_id,
            usage_date=today,
            daily_limit=plan.daily_limit,
            monthly_limit=plan.monthly_limit,
            concurrent_limit=plan.concurrent_limit,
            last_updated=now,
            created_at=now,
        )
        return central_repository(TenantUsageQuota).upsert(usage, update_fields=[]) == 1

    def dataset_step(self) -> bool:
        report = bigquery_bootstrap(tenant_id=self.request.tenant_id, max_workers=self.max_workers)
        for table in report.tables:
            if table.drift:
                logger.warning(
                    "table %s.%s of tenant %s differs from its model; run bootstrap_bigquery --tenant %s",
                    table.dataset,
                    table.table,
                    self.request.tenant_id,
                    self.request.tenant_id,
                )
        return report.count(CREATED) > 0 or any(action != EXISTS for action in report.datasets.values())

    def views_step(self) -> bool:
        gateway = get_gateway()
        # The views are independent of each other; authorising them on the central dataset needs both.
        views = {
            table_definition(model).name: Task(partial(self._create_view, model)) for model in VIEW_MODELS
        }
        created = run_tasks(views, max_workers=self.max_workers, thread_name_prefix="onboarding")
        names = list(created)
        authorized = _add_access_entries(
            gateway,
            central_dataset(),
            [
                bigquery.AccessEntry(
                    None,
                    "view",
                    {"projectId": gateway.project, "datasetId": self.request.dataset_id, "tableId": name},
                )
                for name in names
            ],
        )
        return any(created.values()) or authorized

    def _create_view(self, model: type[BigQueryModel]) -> bool:
        gateway = get_gateway()
        definition = table_definition(model)
        view = bigquery.Table(gateway.table_ref(self.request.dataset_id, definition.name))
        view.view_query = tenant_view_query(gateway.project, model, self.request.tenant_id)
        view.description = (
            f"Read-only: tenant {self.request.tenant_id}'s rows of {central_dataset()}.{definition.name}"
        )
        try:
            gateway.create_table(view)
        except Conflict:
            return False  # created by an earlier, interrupted run
        return True

    def reader_access_step(self) -> bool:
        if self.request.reader is None:
            return False
        return _add_access_entries(get_gateway(), self.request.dataset_id, [self.request.reader])

    def api_key_step(self) -> bool:
        try:
            self.api_key = api_key_create(
                tenant_id=self.request.tenant_id,
                name=INITIAL_KEY_NAME,
                scopes=INITIAL_API_KEY_SCOPES,
                created_by=self.request.created_by,
                api_key_id=initial_api_key_id(self.request.tenant_id),
                record_audit=False,
            )
        except AlreadyExists:
            self.api_key_already_issued = True
            self.api_key = _lost_initial_key(self.request)
            assert self.profile is not None
            row = central_repository(TenantApiKey).find(initial_api_key_id(self.request.tenant_id))
            if row is not None:
                _audit_onboarding_if_missing(self.request, self.profile, row)
            return False
        assert self.profile is not None
        _audit_onboarding(self.request, self.profile, self.api_key.row, resumed=self.resumed)
        return True


def _audit_onboarding(
    request: OnboardingRequest, profile: TenantProfile, key: TenantApiKey, *, resumed: bool
) -> None:
    """The one tenant.onboard entry: written by the run that issued the initial key, so once."""
    audit_record(
        action=AuditAction.TENANT_ONBOARD,
        actor=request.created_by,
        tenant_id=request.tenant_id,
        target_type="tenant",
        target_id=request.tenant_id,
        after={
            "tenant_id": profile.tenant_id,
            "company_name": profile.company_name,
            "admin_email": profile.admin_email,
            "status": profile.status,
            "plan_name": request.plan.name,
            "dataset_id": request.dataset_id,
            "initial_api_key_id": key.api_key_id,
            "initial_key_prefix": key.key_prefix,
            "initial_key_scopes": list(key.scopes or ()),
            "resumed": resumed,
        },
    )


def _audit_onboarding_if_missing(
    request: OnboardingRequest, profile: TenantProfile, key: TenantApiKey
) -> None:
    """The entry of a run whose key landed but whose answer (and entry) were lost (one job)."""
    if central_repository(AuditLogEntry).count(
        filters={"action": AuditAction.TENANT_ONBOARD, "tenant_id": request.tenant_id}
    ):
        return
    # In the name of whoever issued the key: a repeat by someone else only finishes their record.
    made_by = replace(request, created_by=key.created_by) if key.created_by else request
    _audit_onboarding(made_by, profile, key, resumed=True)


def _lost_initial_key(request: OnboardingRequest) -> IssuedApiKey | None:
    """The initial key again, for the same caller's retry of a request whose answer was lost; else None.

    Only inside `retries.retry_of_unknown_outcome` (a repeated Idempotency-Key after a 503), only to
    the actor who created it, and only while it was never used: nobody can have seen it but the
    request that failed.
    """
    if not is_retry_of_unknown_outcome():
        return None
    row = central_repository(TenantApiKey).find(initial_api_key_id(request.tenant_id))
    if (
        row is None
        or row.created_by != request.created_by
        or row.last_used_at is not None
        or not row.is_active
        or row.encrypted_api_key is None
    ):
        return None
    try:
        plaintext = get_kms().decrypt(
            bytes(row.encrypted_api_key), aad=aad_for("tenant_api_keys", row.tenant_id, row.api_key_id)
        )
    except KmsUnavailable as exc:
        raise ServiceUnavailable("KMS is unavailable; retry later.") from exc
    row.encrypted_api_key = None
    logger.info(
        "tenant %s: the initial key of a lost answer is shown again to %s", row.tenant_id, request.created_by
    )
    return IssuedApiKey(row=row, plaintext=plaintext.decode("ascii"))


def tenant_view_query(project: str, model: type[BigQueryModel], tenant_id: str) -> str:
    """SQL of the tenant's read-only view over its own rows of a central table."""
    # A view body cannot take query parameters, so the tenant id is embedded as a literal. That is
    # safe only because it matches TENANT_ID_PATTERN (letters, digits, `_`: no quote or backslash can
    # reach the SQL): checked again here so that no other caller can skip it.
    if not TENANT_ID_PATTERN.fullmatch(tenant_id):
        raise ValidationFailed(f"tenant id {tenant_id!r} cannot be used in a view")
    definition = table_definition(model)
    # Columns listed, not `*`: a column added to the central table later stays out of the tenant's
    # view until somebody decides it belongs there. Actors are masked as the API masks them.
    columns = ", ".join(
        actor_masked_sql(name) if name in ACTOR_FIELDS else quote_column(name)
        for name in definition.column_names
    )
    table = quote_table(project, central_dataset(), definition.name)
    return f"SELECT {columns} FROM {table} WHERE `tenant_id` = '{tenant_id}'"  # noqa: S608


def _add_access_entries(
    gateway: BigQueryGateway, dataset_id: str, wanted: list[bigquery.AccessEntry]
) -> bool:
    """Add the entries a dataset's ACL lacks; True if it changed. Safe against concurrent editors."""
    for _ in range(_ACL_ATTEMPTS):
        dataset = gateway.get_dataset(dataset_id)
        entries = list(dataset.access_entries)
        present = {_entry_key(entry) for entry in entries}
        missing = [entry for entry in wanted if _entry_key(entry) not in present]
        if not missing:
            return False
        dataset.access_entries = entries + missing
        try:
            # The client sends the etag it read as If-Match: a concurrent onboarding that changed the
            # ACL in between makes this fail (Conflict) instead of silently dropping its entries.
            gateway.update_dataset(dataset, ["access_entries"])
        except Conflict:
            continue
        return True
    raise ServiceUnavailable(f"the access list of dataset {dataset_id} kept changing; try again")


def tenant_views_unauthorize(*, tenant_id: str) -> int:
    """Drop the tenant's authorised views from the central dataset's access list; returns how many."""
    gateway = get_gateway()
    central, dataset_id = central_dataset(), tenant_dataset(tenant_id)
    with bigquery_errors_translated():
        for _ in range(_ACL_ATTEMPTS):
            dataset = gateway.get_dataset(central)
            entries = list(dataset.access_entries)
            # Entries count against BigQuery's 2,500 authorised views per dataset: an offboarded
            # tenant must not keep two of them.
            kept = [
                entry
                for entry in entries
                if not (entry.entity_type == "view" and entry.entity_id.get("datasetId") == dataset_id)
            ]
            if len(kept) == len(entries):
                return 0
            dataset.access_entries = kept
            try:
                gateway.update_dataset(dataset, ["access_entries"])
            except Conflict:
                continue
            return len(entries) - len(kept)
    raise ServiceUnavailable(f"the access list of dataset {central} kept changing; try again")


def _entry_key(entry: bigquery.AccessEntry) -> tuple[str | None, str | None, str]:
    entity_id = entry.entity_id
    if isinstance(entity_id, dict):
        identity = "/".join(str(entity_id.get(k, "")) for k in ("projectId", "datasetId", "tableId"))
    else:
        identity = str(entity_id).lower()
    return entry.role, entry.entity_type, identity
