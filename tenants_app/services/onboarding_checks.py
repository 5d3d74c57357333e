"""What an onboarding checks before it writes: the input, then four checks; the dry run reports the same.

`onboarding_request_clean` refuses malformed input (every field error at once, before BigQuery is
asked). `onboarding_checks_run` then runs the checks, in the order a report lists them:

- `tenant_id_free`: no tenant has the id, or only an unfinished onboarding with the same details
  (which the real run finishes);
- `plan_valid`: the plan, named by `plan` or by the original system's `subscription_plan`, exists;
- `dataset_creatable`: the tenant's dataset does not exist yet and the project answered (or it is
  this tenant's, from an earlier run, and is reused);
- `kms_reachable`: the key management service encrypts (the initial key needs it; checking first
  means an outage refuses the onboarding before anything is written).

A check never raises for its verdict: a failed one carries the refusal the real onboarding raises
(AlreadyExists, ServiceUnavailable, KmsUnavailable...), so `tenant_onboard` and the dry run read one
list and cannot disagree. The checks read only; none of them writes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import NoReturn

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from google.cloud import bigquery

from bigquery_backend.client import get_gateway
from bigquery_backend.exceptions import InvalidIdentifier, NotFound
from tenants_app.kms import KmsUnavailable, get_kms
from tenants_app.models import CLOSED_TENANT_STATUSES, PlanName, TenantApiKey, TenantProfile
from tenants_app.repositories import central_repository
from tenants_app.services.api_key_verification import bigquery_errors_translated
from tenants_app.services.datasets import TENANT_ID_PATTERN, tenant_dataset, tenant_dataset_labels
from tenants_app.services.errors import AlreadyExists, ServiceError, ServiceUnavailable, ValidationFailed
from tenants_app.services.plans import PLANS, Plan, plan_get
from tenants_app.services.profile_fields import admin_email_clean, company_name_clean
from tenants_app.services.retries import is_retry_of_unknown_outcome
from tenants_app.task_graph import Task, run_tasks

logger = logging.getLogger(__name__)

# The checks, in the order a report lists them.
TENANT_ID_FREE = "tenant_id_free"
PLAN_VALID = "plan_valid"
DATASET_CREATABLE = "dataset_creatable"
KMS_REACHABLE = "kms_reachable"
ONBOARDING_CHECKS: tuple[str, ...] = (TENANT_ID_FREE, PLAN_VALID, DATASET_CREATABLE, KMS_REACHABLE)

# The plan of a request that names none: the original system's default, for every caller.
DEFAULT_PLAN: str = PlanName.STARTER
PLAN_FIELD = "plan"
# The original system's name for the plan, still sent by integrations written for it.
PLAN_ALIAS = "subscription_plan"

# Names that would shadow a dataset, an API path or a role; the central dataset's name is added at run time.
RESERVED_TENANT_IDS: frozenset[str] = frozenset(
    {
        "admin",
        "administrator",
        "api",
        "billing",
        "central",
        "convergence",
        "default",
        "dryrun",
        "information_schema",
        "internal",
        "me",
        "onboard",
        "null",
        "none",
        "platform",
        "public",
        "region",
        "root",
        "security",
        "staff",
        "support",
        "system",
        "tenant",
        "tenants",
        "test",
        "undefined",
    }
)
ACTOR_MAX_LENGTH = 254
# BigQuery dataset ACL entity types for the `type:` prefix of TENANT_READER_PRINCIPAL_TEMPLATE.
PRINCIPAL_TYPES = {
    "user": "userByEmail",
    "serviceAccount": "userByEmail",
    "group": "groupByEmail",
    "domain": "domain",
}


@dataclass(frozen=True)
class OnboardingRequest:
    """Onboarding input after validation."""

    tenant_id: str
    company_name: str
    admin_email: str
    # As named, and the field that named it (`plan` or `subscription_plan`): a refusal names that one.
    plan_name: str
    plan_field: str
    created_by: str
    dataset_id: str
    reader: bigquery.AccessEntry | None

    @property
    def plan(self) -> Plan:
        """The plan; only once `plan_valid` passed (the real onboarding refuses an unknown one first)."""
        return PLANS[self.plan_name]


@dataclass(frozen=True)
class Check:
    """One check's verdict; `refusal` is what the real onboarding raises when it failed."""

    name: str
    ok: bool
    detail: str
    refusal: Exception | None = None


@dataclass(frozen=True)
class TenantIdCheck(Check):
    """`tenant_id_free`, with what it found: an unfinished onboarding's profile, a finished one's key."""

    profile: TenantProfile | None = None
    initial_key: TenantApiKey | None = None


@dataclass(frozen=True)
class OnboardingReport:
    """The dry run's answer: every check, in order, and the plan the onboarding would use."""

    tenant_id: str
    plan: str
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)


def initial_api_key_id(tenant_id: str) -> str:
    """Deterministic id of the onboarding key, so a re-run finds it instead of issuing a second one."""
    return f"{tenant_id}_initial"


def reserved_tenant_ids() -> frozenset[str]:
    """RESERVED_TENANT_IDS plus the configured central dataset's name."""
    return RESERVED_TENANT_IDS | {str(settings.TENANTS_DATASET).lower()}


# --- input ------------------------------------------------------------------------------------------
def onboarding_request_clean(
    *,
    tenant_id: str,
    company_name: str,
    admin_email: str,
    plan: str | None = None,
    subscription_plan: str | None = None,
    created_by: str,
    plan_must_exist: bool = True,
) -> OnboardingRequest:
    """Check every field and report all errors at once (ValidationFailed.errors).

    With `plan_must_exist=False` (the dry run) an unknown plan is left to `plan_valid`, which reports
    it; the real onboarding refuses it here with the other field errors, before BigQuery is asked.
    """
    errors: dict[str, list[str]] = {}
    dataset_id = _tenant_id_errors(tenant_id, errors)

    company = company_name_clean(errors, company_name)
    email = admin_email_clean(errors, admin_email)

    plan_name, plan_field = _plan_named(plan, subscription_plan, errors)
    if plan_must_exist and PLAN_FIELD not in errors:
        refusal = plan_valid_check(plan_name, plan_field).refusal
        if isinstance(refusal, ValidationFailed):
            errors.update(refusal.errors)

    actor = created_by.strip() if isinstance(created_by, str) else ""
    if not actor or len(actor) > ACTOR_MAX_LENGTH:
        errors["created_by"] = [f"Give who onboards the tenant (1-{ACTOR_MAX_LENGTH} characters)."]

    if errors:
        summary = "; ".join(f"{name}: {' '.join(reasons)}" for name, reasons in errors.items())
        raise ValidationFailed(f"invalid onboarding request: {summary}", errors=errors)
    return OnboardingRequest(
        tenant_id=tenant_id,
        company_name=company,
        admin_email=email,
        plan_name=plan_name,
        plan_field=plan_field,
        created_by=actor,
        dataset_id=dataset_id,
        reader=reader_access_entry(tenant_id),
    )


def _tenant_id_errors(tenant_id: object, errors: dict[str, list[str]]) -> str:
    """The tenant's dataset id; '' with errors["tenant_id"] set when the id cannot be a new tenant's."""
    # The original pattern (datasets.TENANT_ID_PATTERN), in lowercase only for a new tenant: the id
    # names a dataset, a label value and the literal inside the tenant's views, one spelling per tenant.
    if (
        not isinstance(tenant_id, str)
        or not TENANT_ID_PATTERN.fullmatch(tenant_id)
        or tenant_id != tenant_id.lower()
    ):
        errors["tenant_id"] = ["Use 3-50 lowercase letters, digits or underscores."]
    elif tenant_id.startswith("_"):
        # BigQuery hides datasets whose name starts with an underscore.
        errors["tenant_id"] = ["Start with a letter or a digit."]
    elif tenant_id in reserved_tenant_ids():
        errors["tenant_id"] = [f"'{tenant_id}' is reserved; choose another id."]
    else:
        try:
            dataset_id = tenant_dataset(tenant_id)
        except InvalidIdentifier:
            errors["tenant_id"] = ["This id gives an invalid dataset name with TENANT_DATASET_TEMPLATE."]
        else:
            if dataset_id.lower() not in reserved_tenant_ids():
                return dataset_id
            errors["tenant_id"] = [f"Its dataset name '{dataset_id}' is reserved; choose another id."]
    return ""


def _plan_named(plan: str | None, alias: str | None, errors: dict[str, list[str]]) -> tuple[str, str]:
    """The plan a request names and the field that named it: DEFAULT_PLAN when it names none."""
    if alias is None:
        return (DEFAULT_PLAN if plan is None else plan), PLAN_FIELD
    if plan is None:
        return alias, PLAN_ALIAS
    if plan != alias:
        # Two names for one field: guessing which one was meant would onboard on a plan nobody chose.
        errors[PLAN_FIELD] = [f"Differs from {PLAN_ALIAS}: give one of them, or both with the same value."]
        errors[PLAN_ALIAS] = [f"Differs from {PLAN_FIELD}: give one of them, or both with the same value."]
    return plan, PLAN_FIELD


def reader_access_entry(tenant_id: str) -> bigquery.AccessEntry | None:
    """READER entry for the tenant's principal (TENANT_READER_PRINCIPAL_TEMPLATE); None when unset."""
    template = settings.TENANT_READER_PRINCIPAL_TEMPLATE
    if not template:
        return None
    try:
        principal = template.format(tenant_id=tenant_id)
    except (KeyError, IndexError, ValueError) as exc:
        raise ImproperlyConfigured(
            f"TENANT_READER_PRINCIPAL_TEMPLATE {template!r} may only use {{tenant_id}}"
        ) from exc
    kind, _, value = principal.partition(":")
    entity_type = PRINCIPAL_TYPES.get(kind)
    if entity_type is None or not value or (kind != "domain" and "@" not in value):
        raise ImproperlyConfigured(
            f"TENANT_READER_PRINCIPAL_TEMPLATE must give TYPE:VALUE with TYPE one of "
            f"{', '.join(PRINCIPAL_TYPES)} (e.g. group:{{tenant_id}}-readers@example.com), not {template!r}"
        )
    return bigquery.AccessEntry("READER", entity_type, value)


# --- the checks -------------------------------------------------------------------------------------
def onboarding_checks_run(request: OnboardingRequest, *, max_workers: int) -> list[Check]:
    """Every check, in ONBOARDING_CHECKS order; the three that ask a service run side by side."""
    probes: dict[str, Task[Check]] = {
        TENANT_ID_FREE: Task(partial(_guarded, TENANT_ID_FREE, partial(tenant_id_free_check, request))),
        DATASET_CREATABLE: Task(
            partial(_guarded, DATASET_CREATABLE, partial(dataset_creatable_check, request))
        ),
        KMS_REACHABLE: Task(kms_reachable_check),
    }
    found = run_tasks(probes, max_workers=max_workers, thread_name_prefix="onboarding")
    plan = plan_valid_check(request.plan_name, request.plan_field)
    return [found[TENANT_ID_FREE], plan, found[DATASET_CREATABLE], found[KMS_REACHABLE]]


def first_refused(checks: list[Check]) -> Check | None:
    """The first failed check in report order: its refusal is the onboarding's (the id's wins)."""
    return next((check for check in checks if not check.ok), None)


def refuse(check: Check) -> NoReturn:
    """Raise the refusal of a failed check."""
    assert check.refusal is not None, f"check {check.name} failed without a refusal"
    raise check.refusal


def _guarded(name: str, check: Callable[[], Check]) -> Check:
    """A check whose service failed (BigQuery down) fails with the reason, so the others still report."""
    try:
        with bigquery_errors_translated():
            return check()
    except ServiceError as exc:
        return Check(name, False, f"Could not be checked: {exc.message}", refusal=exc)


def tenant_id_free_check(request: OnboardingRequest) -> TenantIdCheck:
    tenant_id = request.tenant_id
    profile = central_repository(TenantProfile).find(tenant_id)
    if profile is None:
        return TenantIdCheck(TENANT_ID_FREE, True, f"No tenant has the id {tenant_id}.")
    if profile.status in CLOSED_TENANT_STATUSES:
        # An offboarded tenant is never "resumed": that would recreate a purged dataset and its views.
        reason = "This tenant was offboarded."
        refusal = AlreadyExists(
            f"tenant {tenant_id} was offboarded (status {profile.status}); choose another id",
            errors={"tenant_id": [reason]},
        )
        return TenantIdCheck(TENANT_ID_FREE, False, f"{reason} Choose another id.", refusal, profile)
    keys = central_repository(TenantApiKey).list(
        filters={"api_key_id": initial_api_key_id(tenant_id), "tenant_id": tenant_id}, limit=1
    )
    initial_key = keys[0] if keys else None
    if initial_key is not None and not is_retry_of_unknown_outcome():
        # Finished: only its audit entry may be missing (the key's answer lost after it was stored),
        # which the real onboarding writes before it refuses.
        reason = "A tenant with this id already exists."
        refusal = AlreadyExists(
            f"tenant {tenant_id} already exists (status {profile.status}); "
            f"to replace a lost initial key, rotate API key {initial_api_key_id(tenant_id)}",
            errors={"tenant_id": [reason]},
        )
        return TenantIdCheck(TENANT_ID_FREE, False, reason, refusal, profile, initial_key)
    # Unfinished, or the same caller repeating a request whose outcome was lost: the run goes through
    # (every step finds its work done) with the details it started with.
    differs = check_same_request(profile, request)
    if differs is not None:
        fields = ", ".join(differs.errors)
        detail = (
            f"An unfinished onboarding of this id has another {fields}; send the same details to finish it."
        )
        return TenantIdCheck(TENANT_ID_FREE, False, detail, differs, profile, initial_key)
    detail = "An unfinished onboarding of this id, with the same details, is finished by onboarding it."
    return TenantIdCheck(TENANT_ID_FREE, True, detail, None, profile, initial_key)


def check_same_request(profile: TenantProfile, request: OnboardingRequest) -> AlreadyExists | None:
    """The refusal when an unfinished onboarding started with other details (it is finished with its own)."""
    differences = [
        name
        for name, stored, given in (
            ("company_name", profile.company_name, request.company_name),
            ("admin_email", profile.admin_email.lower(), request.admin_email.lower()),
            (request.plan_field, profile.subscription_plan, request.plan_name),
        )
        if stored != given
    ]
    if not differences:
        return None
    return AlreadyExists(
        f"tenant {request.tenant_id} exists from an unfinished onboarding with another "
        f"{', '.join(differences)}; run it again with the same details to finish it",
        errors={name: ["Differs from the unfinished onboarding of this tenant."] for name in differences},
    )


def plan_valid_check(plan_name: str, plan_field: str) -> Check:
    """The plan exists; a refusal names the field the caller used for it."""
    try:
        # Not a string (a Python caller's slip): no plan either, and no unhashable key for the catalogue.
        plan = plan_get(plan_name if isinstance(plan_name, str) else "")
    except ValidationFailed as exc:
        reasons = exc.errors[PLAN_FIELD]
        refusal = ValidationFailed(f"unknown plan in {plan_field}", errors={plan_field: reasons})
        return Check(PLAN_VALID, False, f"{plan_field} names no plan. {' '.join(reasons)}", refusal)
    return Check(
        PLAN_VALID,
        True,
        f"Plan {plan.name} (from {plan_field}) exists: {plan.daily_limit} pipeline runs a day, "
        f"{plan.concurrent_limit} at once.",
    )


def dataset_creatable_check(request: OnboardingRequest) -> Check:
    """The dataset is absent and the project answered, or it is this tenant's and is reused."""
    gateway = get_gateway()
    try:
        dataset = gateway.get_dataset(request.dataset_id)
    except NotFound:
        # BigQuery answered for the project: it is reachable, and the name is free.
        detail = f"Dataset {request.dataset_id} does not exist yet in project {gateway.project}."
        return Check(DATASET_CREATABLE, True, detail)
    expected = tenant_dataset_labels(request.tenant_id)
    labels = dataset.labels or {}
    if any(labels.get(name) != expected[name] for name in ("managed_by", "tenant_id")):
        # Adopting it would grant its tables to this tenant's readers.
        reason = "A dataset with this name already exists."
        refusal = AlreadyExists(
            f"dataset {request.dataset_id} already exists and does not belong to tenant "
            f"{request.tenant_id}; choose another tenant id",
            errors={"tenant_id": [reason]},
        )
        detail = f"Dataset {request.dataset_id} already exists and is not this tenant's; choose another id."
        return Check(DATASET_CREATABLE, False, detail, refusal)
    detail = f"Dataset {request.dataset_id} exists from an earlier onboarding of this tenant; it is reused."
    return Check(DATASET_CREATABLE, True, detail)


def kms_reachable_check() -> Check:
    """One test encryption: the initial key is encrypted last, so an outage is found before any write."""
    try:
        get_kms().check()
    except KmsUnavailable as exc:
        # Its message can name the key ring and the backend's own text: for the operator's log only.
        logger.warning("KMS is unavailable, an onboarding is refused before writing: %s", exc)
        refusal = ServiceUnavailable("KMS is unavailable; nothing was written, retry later.")
        refusal.__cause__ = exc
        detail = "The key management service did not encrypt a test value; retry later."
        return Check(KMS_REACHABLE, False, detail, refusal)
    return Check(KMS_REACHABLE, True, "The key management service encrypted a test value.")
