"""Pipeline configs (schedules) of a tenant: create, read, change, pause, resume, delete, run now.

A config runs `pipeline_template` (the `pipeline_id` of its runs), one of the catalogue's templates
(`tenants_app/pipeline_templates.py`) with `parameters` checked against it, for a provider and a domain on a
5-field cron schedule read in its IANA time zone (`tenants_app/services/cron.py` has the DST rules);
`next_run_time` is its next slot, stored in UTC, and `manage.py schedule_pipelines` enqueues the slots.
Priority is 1 (most urgent) to 10 (least), default 5: workers claim lower numbers first.

Lifecycle: creating, changing and resuming need a subscription state that allows configuring (ACTIVE or
TRIAL; see `plans.LIFECYCLE_RULES`); "run now" needs one that allows runs (also PAST_DUE); pausing,
deleting and reading are always allowed, so a tenant can always stop its pipelines.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.utils import timezone

from bigquery_backend.repository import Page
from tenants_app.models import (
    AuditLogEntry,
    Provider,
    RunState,
    RunTrigger,
    TenantPipelineConfig,
    TenantScheduledPipelineRun,
)
from tenants_app.pipeline_templates import template_check, template_parameters_resolve
from tenants_app.repositories import central_repository
from tenants_app.secrets import find_secret_paths
from tenants_app.services.api_key_verification import bigquery_errors_translated
from tenants_app.services.audit import AuditAction, audit_changes, audit_record, audit_snapshot
from tenants_app.services.cron import cron_next, cron_validate, timezone_validate
from tenants_app.services.errors import AlreadyExists, DoesNotExist, ValidationFailed
from tenants_app.services.plans import OPERATION_CONFIGURE, OPERATION_RUN
from tenants_app.services.quotas import subscription_require_active
from tenants_app.services.retries import has_request_seed, is_retry_of_unknown_outcome, stable_id
from tenants_app.services.scheduler import EnqueueEntry, manual_run_id, runs_enqueue
from tenants_app.services.text_rules import bidi_require_none

logger = logging.getLogger(__name__)

MIN_PRIORITY, MAX_PRIORITY, DEFAULT_PRIORITY = 1, 10, 5
MAX_PAGE_SIZE = 200
MAX_PARAMETERS_BYTES = 16 * 1024
MAX_PARAMETERS_DEPTH = 10
MAX_TEXT_LENGTH = 200
# Templates name code the workers run: a conservative identifier, never free text.
TEMPLATE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,199}$")
EDITABLE_FIELDS = (
    "provider",
    "domain",
    "pipeline_template",
    "schedule_cron",
    "timezone",
    "parameters",
    "priority",
    "is_active",
)
# What the audit trail keeps of a config (everything but the scheduler's bookkeeping).
AUDITED_FIELDS = (*EDITABLE_FIELDS, "next_run_time")
_UNSET: Any = object()


@dataclass(frozen=True)
class ManualRun:
    """The run that "run now" enqueued, or found already enqueued in the same minute."""

    run: TenantScheduledPipelineRun
    created: bool


def _repository() -> Any:
    return central_repository(TenantPipelineConfig)


# --- reads ------------------------------------------------------------------------------------------
def pipeline_config_list(
    *,
    tenant_id: str,
    is_active: bool | None = None,
    provider: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> Page[TenantPipelineConfig]:
    """One page of the tenant's configs, oldest first, with the total: two BigQuery jobs."""
    errors: dict[str, list[str]] = {}
    if provider is not None and provider not in Provider.values:
        errors["provider"] = [f"Choose one of {', '.join(Provider.values)}."]
    if not 1 <= limit <= MAX_PAGE_SIZE:
        errors["limit"] = [f"Use 1 to {MAX_PAGE_SIZE}."]
    if offset < 0:
        errors["offset"] = ["Use 0 or more."]
    if errors:
        raise ValidationFailed("invalid filter", errors=errors)
    filters: dict[str, Any] = {"tenant_id": tenant_id}
    if is_active is not None:
        filters["is_active"] = is_active
    if provider is not None:
        filters["provider"] = provider
    with bigquery_errors_translated():
        return _repository().page(filters=filters, order_by=("created_at",), limit=limit, offset=offset)


def pipeline_config_get(*, tenant_id: str, config_id: str) -> TenantPipelineConfig:
    """The tenant's config; another tenant's is as absent as a missing one (DoesNotExist)."""
    if len(config_id) > 128:
        raise DoesNotExist(f"pipeline config {config_id!r} does not exist")
    with bigquery_errors_translated():
        rows = _repository().list(filters={"config_id": config_id, "tenant_id": tenant_id}, limit=1)
    if not rows:
        raise DoesNotExist(f"pipeline config {config_id!r} does not exist")
    return rows[0]


# --- writes -----------------------------------------------------------------------------------------
def pipeline_config_create(
    *,
    tenant_id: str,
    provider: str,
    domain: str,
    pipeline_template: str,
    schedule_cron: str,
    timezone_name: str = "UTC",
    parameters: dict[str, Any] | None = None,
    priority: int = DEFAULT_PRIORITY,
    is_active: bool = True,
    actor: str,
    now: datetime | None = None,
) -> TenantPipelineConfig:
    """Validate and store a new config with its first `next_run_time` (audited).

    The id comes from `retries.stable_id`: the retry of an API request whose insert landed but whose
    answer was lost (same Idempotency-Key) returns that config instead of scheduling a second one.
    """
    now = now or timezone.now()
    values = _validated(
        {
            "provider": provider,
            "domain": domain,
            "pipeline_template": pipeline_template,
            "schedule_cron": schedule_cron,
            "timezone": timezone_name,
            "parameters": parameters,
            "priority": priority,
            "is_active": is_active,
        },
        catalogue=True,
    )
    with bigquery_errors_translated():
        subscription_require_active(tenant_id=tenant_id, operation=OPERATION_CONFIGURE)
        config = TenantPipelineConfig(
            config_id=f"{tenant_id}_{stable_id('pipeline_config')[:16]}",
            tenant_id=tenant_id,
            next_run_time=_next_run_time(values, now) if values["is_active"] else None,
            created_at=now,
            created_by=actor,
            **values,
        )
        if not has_request_seed():
            _repository().insert(config)  # a random id cannot collide: a plain INSERT
        elif _repository().upsert(config, update_fields=[]) == 0:
            # Insert if absent (one MERGE): the row exists, made by this request's lost first attempt.
            return _finish_lost_create(config, actor=actor)
        audit_record(
            action=AuditAction.PIPELINE_CONFIG_CREATE,
            actor=actor,
            tenant_id=tenant_id,
            target_type="pipeline_config",
            target_id=config.config_id,
            after=audit_snapshot(config, fields=AUDITED_FIELDS),
        )
    logger.info("pipeline config %s created for tenant %s", config.config_id, tenant_id)
    return config


def _finish_lost_create(config: TenantPipelineConfig, *, actor: str) -> TenantPipelineConfig:
    """The config a lost answer carried, with its missing audit entry; AlreadyExists if not a retry."""
    refused = AlreadyExists(f"pipeline config {config.config_id} already exists")
    if not is_retry_of_unknown_outcome():
        raise refused
    rows = _repository().list(filters={"config_id": config.config_id, "tenant_id": config.tenant_id}, limit=1)
    if not rows or rows[0].created_by != actor:
        raise refused
    existing = rows[0]
    audited = {
        "action": AuditAction.PIPELINE_CONFIG_CREATE,
        "tenant_id": config.tenant_id,
        "target_id": config.config_id,
    }
    if central_repository(AuditLogEntry).count(filters=audited) == 0:
        audit_record(
            actor=actor,
            target_type="pipeline_config",
            after=audit_snapshot(existing, fields=AUDITED_FIELDS),
            **audited,
        )
    logger.info("pipeline config %s: the lost answer of its creation is returned again", config.config_id)
    return existing


def pipeline_config_update(
    *,
    tenant_id: str,
    config_id: str,
    actor: str,
    provider: str = _UNSET,
    domain: str = _UNSET,
    pipeline_template: str = _UNSET,
    schedule_cron: str = _UNSET,
    timezone_name: str = _UNSET,
    parameters: dict[str, Any] | None = _UNSET,
    priority: int = _UNSET,
    is_active: bool = _UNSET,
    now: datetime | None = None,
) -> TenantPipelineConfig:
    """Change the given fields; a new schedule, time zone or activation recomputes `next_run_time`."""
    now = now or timezone.now()
    given = {
        "provider": provider,
        "domain": domain,
        "pipeline_template": pipeline_template,
        "schedule_cron": schedule_cron,
        "timezone": timezone_name,
        "parameters": parameters,
        "priority": priority,
        "is_active": is_active,
    }
    changes = _validated({name: value for name, value in given.items() if value is not _UNSET})
    config = pipeline_config_get(tenant_id=tenant_id, config_id=config_id)
    changed = {name: value for name, value in changes.items() if getattr(config, name) != value}
    if not changed:
        return config
    if {"pipeline_template", "parameters"} & changed.keys():
        # Only then: a row written before the catalogue (its template unknown) can still be paused or moved.
        merged = {
            name: changed.get(name, getattr(config, name)) for name in ("pipeline_template", "parameters")
        }
        errors = _catalogue_errors(merged)
        if errors:
            raise ValidationFailed("invalid pipeline config", errors=errors)
    if changed.keys() != {"is_active"} or changed["is_active"]:
        # Pausing is always allowed; anything that sets up or restarts runs needs a configurable state.
        with bigquery_errors_translated():
            subscription_require_active(tenant_id=tenant_id, operation=OPERATION_CONFIGURE)
    return _apply(config, changed, actor=actor, action=AuditAction.PIPELINE_CONFIG_UPDATE, now=now)


def pipeline_config_pause(*, tenant_id: str, config_id: str, actor: str) -> TenantPipelineConfig:
    """Stop scheduling the config (idempotent); queued runs stay queued."""
    config = pipeline_config_get(tenant_id=tenant_id, config_id=config_id)
    if not config.is_active:
        return config
    return _apply(
        config,
        {"is_active": False},
        actor=actor,
        action=AuditAction.PIPELINE_CONFIG_PAUSE,
        now=timezone.now(),
    )


def pipeline_config_resume(
    *, tenant_id: str, config_id: str, actor: str, now: datetime | None = None
) -> TenantPipelineConfig:
    """Schedule the config again from its next slot after now (no backfill of the pause; idempotent)."""
    config = pipeline_config_get(tenant_id=tenant_id, config_id=config_id)
    if config.is_active:
        return config
    with bigquery_errors_translated():
        subscription_require_active(tenant_id=tenant_id, operation=OPERATION_CONFIGURE)
    return _apply(
        config,
        {"is_active": True},
        actor=actor,
        action=AuditAction.PIPELINE_CONFIG_RESUME,
        now=now or timezone.now(),
    )


def pipeline_config_delete(*, tenant_id: str, config_id: str, actor: str) -> TenantPipelineConfig:
    """Delete the config (audited with its last values); runs already queued are not cancelled."""
    config = pipeline_config_get(tenant_id=tenant_id, config_id=config_id)
    with bigquery_errors_translated():
        if _repository().delete_where(filters={"config_id": config_id, "tenant_id": tenant_id}) == 0:
            raise DoesNotExist(f"pipeline config {config_id!r} does not exist")
        audit_record(
            action=AuditAction.PIPELINE_CONFIG_DELETE,
            actor=actor,
            tenant_id=tenant_id,
            target_type="pipeline_config",
            target_id=config_id,
            before=audit_snapshot(config, fields=AUDITED_FIELDS),
        )
    logger.info("pipeline config %s of tenant %s deleted", config_id, tenant_id)
    return config


def pipeline_config_run_now(
    *,
    tenant_id: str,
    config_id: str,
    actor: str,
    overrides: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> ManualRun:
    """Enqueue a run of the config for this minute (even paused); a repeat in that minute is the same run.

    `overrides` replace some of the config's parameters for this run only, checked as the config's are
    (ValidationFailed naming `parameters.<name>`). The run is recorded as manual, started by `actor`.
    """
    now = now or timezone.now()
    config = pipeline_config_get(tenant_id=tenant_id, config_id=config_id)
    parameters = None
    if overrides:
        parameters = run_parameters_check(config, {**(config.parameters or {}), **overrides})
    minute = now.astimezone(UTC).replace(second=0, microsecond=0)
    run_id = manual_run_id(config.config_id, minute)
    entry = EnqueueEntry(
        run_id, config.config_id, minute, RunTrigger.MANUAL, trigger_by=actor, parameters=parameters
    )
    with bigquery_errors_translated():
        subscription_require_active(tenant_id=tenant_id, operation=OPERATION_RUN)
        created = runs_enqueue(entries=[entry], now=now) > 0
        run = central_repository(TenantScheduledPipelineRun).find(run_id)
        if run is None:
            # Deleted between our read and the enqueue (the statement joins the configs table).
            raise DoesNotExist(f"pipeline config {config_id!r} does not exist")
        if created:
            audit_record(
                action=AuditAction.RUN_ENQUEUE_MANUAL,
                actor=actor,
                tenant_id=tenant_id,
                target_type="run",
                target_id=run_id,
                after={
                    "config_id": config.config_id,
                    "scheduled_time": minute,
                    "state": RunState.QUEUED,
                    "overridden": sorted(overrides) if overrides else None,
                },
            )
    return ManualRun(run=run, created=created)


def run_parameters_check(config: TenantPipelineConfig, parameters: dict[str, Any]) -> dict[str, Any]:
    """The parameters of one run of `config`, checked as a config's are; ValidationFailed otherwise."""
    values = _validated({"parameters": parameters})
    errors = _catalogue_errors({"pipeline_template": config.pipeline_template, **values})
    if errors:
        raise ValidationFailed("invalid parameters", errors=errors)
    return values["parameters"]


# --- internals --------------------------------------------------------------------------------------
def _apply(
    config: TenantPipelineConfig, changed: dict[str, Any], *, actor: str, action: AuditAction, now: datetime
) -> TenantPipelineConfig:
    """Write `changed` (plus a recomputed next run time) guarded by `updated_at`, and audit it."""
    before = audit_snapshot(config, fields=AUDITED_FIELDS)
    values = dict(changed)
    merged = {name: values.get(name, getattr(config, name)) for name in EDITABLE_FIELDS}
    if {"schedule_cron", "timezone", "is_active"} & values.keys():
        values["next_run_time"] = _next_run_time(merged, now) if merged["is_active"] else None
    # The real clock, not `now`: every change must move updated_at, which guards the next ones.
    values["updated_at"] = timezone.now()
    values["updated_by"] = actor
    with bigquery_errors_translated():
        # The `updated_at` condition makes concurrent edits safe: the second one matches no row. The
        # scheduler compares it too, so it never claims slots computed from the replaced schedule.
        filters: dict[str, Any] = {"config_id": config.config_id, "tenant_id": config.tenant_id}
        if config.updated_at is None:
            filters["updated_at__isnull"] = True
        else:
            filters["updated_at"] = config.updated_at
        if _repository().update_where(values, filters=filters) == 0:
            raise ValidationFailed(
                f"pipeline config {config.config_id!r} changed meanwhile; reload and try again",
                errors={"config_id": ["Changed meanwhile."]},
            )
        for name, value in values.items():
            setattr(config, name, value)
        old, new = audit_changes(before, audit_snapshot(config, fields=AUDITED_FIELDS))
        audit_record(
            action=action,
            actor=actor,
            tenant_id=config.tenant_id,
            target_type="pipeline_config",
            target_id=config.config_id,
            before=old,
            after=new,
        )
    return config


def _next_run_time(values: dict[str, Any], now: datetime) -> datetime:
    return cron_next(expression=values["schedule_cron"], timezone=values["timezone"], after=now)


def _validated(values: dict[str, Any], *, catalogue: bool = False) -> dict[str, Any]:
    """Check every given field (and, with `catalogue`, the template and its parameters); ValidationFailed
    naming each wrong one."""
    errors: dict[str, list[str]] = {}
    cleaned: dict[str, Any] = {}
    for name, value in values.items():
        try:
            cleaned[name] = _VALIDATORS[name](value)
        except ValidationFailed as exc:
            _merge_errors(errors, exc.errors or {name: [exc.message]})
    if catalogue and "pipeline_template" in cleaned:
        _merge_errors(errors, _catalogue_errors(cleaned))
    if errors:
        raise ValidationFailed("invalid pipeline config", errors=errors)
    return cleaned


def _catalogue_errors(values: dict[str, Any]) -> dict[str, list[str]]:
    """The template must be the catalogue's; its parameters are checked once they passed the generic
    checks (a secret or an oversized document is reported as `parameters`, before any of its names)."""
    try:
        template = template_check(values["pipeline_template"])
        if "parameters" in values:
            template_parameters_resolve(template=template, parameters=values["parameters"])
    except ValidationFailed as exc:
        return exc.errors
    return {}


def _merge_errors(errors: dict[str, list[str]], more: dict[str, list[str]]) -> None:
    for field_name, messages in more.items():
        errors.setdefault(field_name, []).extend(messages)


def _field_error(name: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, errors={name: [message]})


def _provider(value: Any) -> str:
    if value not in Provider.values:
        raise _field_error("provider", f"Choose one of {', '.join(Provider.values)}.")
    return str(value)


def _text(name: str) -> Any:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise _field_error(name, "This field is required.")
        value = value.strip()
        if len(value) > MAX_TEXT_LENGTH:
            raise _field_error(name, f"Use at most {MAX_TEXT_LENGTH} characters.")
        if any(ord(character) < 32 or 0xD800 <= ord(character) <= 0xDFFF for character in value):
            raise _field_error(name, "Control characters are not allowed.")
        bidi_require_none(name, value)
        return value

    return check


def _template(value: Any) -> str:
    value = _text("pipeline_template")(value)
    if not TEMPLATE_PATTERN.fullmatch(value):
        raise _field_error(
            "pipeline_template", "Use letters, digits and _ . : / - (starting with a letter or digit)."
        )
    return value


def _priority(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise _field_error(
            "priority",
            f"Use a whole number from {MIN_PRIORITY} (most urgent) to {MAX_PRIORITY} (least urgent).",
        )
    return value


def _is_active(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _field_error("is_active", "Use true or false.")
    return value


def _parameters(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _field_error("parameters", "Use a JSON object (or null).")
    try:
        encoded = json.dumps(value, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError):
        raise _field_error("parameters", "Use plain JSON values (no NaN or Infinity).") from None
    if len(encoded.encode("utf-8", errors="surrogatepass")) > MAX_PARAMETERS_BYTES:
        raise _field_error("parameters", f"Use at most {MAX_PARAMETERS_BYTES // 1024} KiB of JSON.")
    _check_depth(value, depth=0)
    # Runs and their parameters are copied into the tenant's GenAI-visible dataset: no secrets in them,
    # under a secret's name (`dbPassword`) or a harmless one (a DSN's password, a bearer header, a key).
    found = find_secret_paths(value, "parameters")
    if found:
        raise _field_error(
            "parameters",
            f"'{found[0].key}' names or holds a secret: parameters are copied into runs that the tenant's "
            "GenAI tools can read. Store secrets as cloud credentials instead.",
        )
    return value


def _check_depth(value: Any, *, depth: int) -> None:
    if depth > MAX_PARAMETERS_DEPTH:
        raise _field_error("parameters", f"Nest at most {MAX_PARAMETERS_DEPTH} levels deep.")
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for item in children:
        _check_depth(item, depth=depth + 1)


_VALIDATORS: dict[str, Any] = {
    "provider": _provider,
    "domain": _text("domain"),
    "pipeline_template": _template,
    "schedule_cron": cron_validate,
    "timezone": timezone_validate,
    "parameters": _parameters,
    "priority": _priority,
    "is_active": _is_active,
}
