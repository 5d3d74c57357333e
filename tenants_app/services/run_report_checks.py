"""What workers send with their reports, checked: step logs, DQ results, JSON sizes and depth, secrets.

Tenant datasets are readable by GenAI tools, so JSON that names a secret or holds one is refused with a
400 naming the field (tenants_app/secrets.py decides), and error texts have secret values redacted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from tenants_app.models import DataQualityStatus, TenantDqResult, TenantStepLog
from tenants_app.secrets import find_secret_paths, redact_secrets
from tenants_app.services.run_common import (
    MAX_DQ_RESULTS,
    MAX_ERROR_LENGTH,
    MAX_JSON_BYTES,
    MAX_JSON_DEPTH,
    MAX_REPORT_BYTES,
    MAX_STEP_LOGS,
    MAX_STEP_METADATA_BYTES,
    STEP_STATES,
)

# BigQuery's INT64: a count past it fails the statement that commits the whole tick's reports.
_INT64_MAX = 2**63 - 1
_COUNT_ERROR = f"A whole number from 0 to {_INT64_MAX}."


def report_step_logs_checked(
    errors: dict[str, list[str]], items: Sequence[Mapping[str, Any]]
) -> list[TenantStepLog]:
    if len(items) > MAX_STEP_LOGS:
        errors["step_logs"] = [f"At most {MAX_STEP_LOGS} steps."]
        return []
    steps: list[TenantStepLog] = []
    indexes: set[int] = set()
    for position, item in enumerate(items):
        name = f"step_logs[{position}]"
        index = item.get("step_index")
        if not _is_count(index):
            errors[f"{name}.step_index"] = [_COUNT_ERROR]
            continue
        if index in indexes:
            errors[f"{name}.step_index"] = [f"Step index {index} appears twice."]
        indexes.add(index)
        if item.get("status") not in STEP_STATES:
            errors[f"{name}.status"] = [f"Choose one of {', '.join(STEP_STATES)}."]
        start, end = item.get("start_time"), item.get("end_time")
        if not isinstance(start, datetime) or start.tzinfo is None:
            errors[f"{name}.start_time"] = ["A timestamp with a time zone."]
            continue
        if end is not None and (not isinstance(end, datetime) or end < start):
            errors[f"{name}.end_time"] = ["Must not be before start_time."]
            continue
        for text in ("step_name", "step_type"):
            if not isinstance(item.get(text), str) or not item[text].strip():
                errors[f"{name}.{text}"] = ["Required."]
        message = item.get("error_message")
        if message is not None and len(str(message)) > MAX_ERROR_LENGTH:
            errors[f"{name}.error_message"] = [f"At most {MAX_ERROR_LENGTH} characters."]
        metadata = report_json_checked(
            errors, f"{name}.metadata", item.get("metadata"), max_bytes=MAX_STEP_METADATA_BYTES
        )
        rows = item.get("rows_processed")
        if rows is not None and not _is_count(rows):
            errors[f"{name}.rows_processed"] = [_COUNT_ERROR]
        duration = item.get("duration_ms")
        if duration is not None and not _is_count(duration):
            errors[f"{name}.duration_ms"] = [_COUNT_ERROR]
        if duration is None and end is not None:
            duration = int((end - start).total_seconds() * 1000)
        steps.append(
            TenantStepLog(
                step_logging_id="pending",
                tenant_id="pending",
                pipeline_logging_id="pending",
                step_name=str(item.get("step_name", "")).strip()[:200],
                step_type=str(item.get("step_type", "")).strip()[:64],
                step_index=index,
                status=item.get("status"),
                start_time=start,
                end_time=end,
                duration_ms=duration,
                rows_processed=rows,
                error_message=report_text_redacted(message),
                metadata=metadata,
            )
        )
    return steps


def report_dq_results_checked(
    errors: dict[str, list[str]], items: Sequence[Mapping[str, Any]]
) -> list[TenantDqResult]:
    if len(items) > MAX_DQ_RESULTS:
        errors["dq_results"] = [f"At most {MAX_DQ_RESULTS} results."]
        return []
    checks: list[TenantDqResult] = []
    for position, item in enumerate(items):
        name = f"dq_results[{position}]"
        executed = item.get("executed_at")
        if not isinstance(executed, datetime) or executed.tzinfo is None:
            errors[f"{name}.executed_at"] = ["A timestamp with a time zone."]
            continue
        if item.get("overall_status") not in DataQualityStatus.values:
            errors[f"{name}.overall_status"] = [f"Choose one of {', '.join(DataQualityStatus.values)}."]
        counts = {}
        for count in ("expectations_passed", "expectations_failed"):
            value = item.get(count)
            if not _is_count(value):
                errors[f"{name}.{count}"] = [_COUNT_ERROR]
            counts[count] = value
        for text in ("target_table", "dq_config_id"):
            if not isinstance(item.get(text), str) or not item[text].strip():
                errors[f"{name}.{text}"] = ["Required."]
        failed = report_json_checked(
            errors, f"{name}.failed_expectations", item.get("failed_expectations"), max_bytes=MAX_JSON_BYTES
        )
        checks.append(
            TenantDqResult(
                dq_result_id="pending",
                pipeline_logging_id="pending",
                tenant_id="pending",
                target_table=str(item.get("target_table", "")).strip()[:1024],
                dq_config_id=str(item.get("dq_config_id", "")).strip()[:128],
                executed_at=executed,
                expectations_passed=counts["expectations_passed"],
                expectations_failed=counts["expectations_failed"],
                failed_expectations=failed,
                overall_status=item.get("overall_status"),
                ingestion_date=executed.date(),
            )
        )
    return checks


def report_size_checked(
    errors: dict[str, list[str]],
    *,
    steps: Sequence[TenantStepLog],
    checks: Sequence[TenantDqResult],
    metadata: Any,
    error: str | None,
) -> None:
    """The report as a whole within MAX_REPORT_BYTES, counted as sent (JSON, non-ASCII escaped); the
    error names its largest part."""
    sizes = {
        "step_logs": sum(_json_size(step.metadata) + _json_size(step.error_message) for step in steps),
        "dq_results": sum(_json_size(check.failed_expectations) for check in checks),
        "run_metadata": _json_size(metadata),
        "error": _json_size(error),
    }
    if sum(sizes.values()) > MAX_REPORT_BYTES:
        largest = max(sizes, key=lambda name: sizes[name])
        errors.setdefault(largest, []).append(
            f"The report's JSON and texts together: at most {MAX_REPORT_BYTES // (1024 * 1024)} MiB "
            f"as sent, non-ASCII characters escaped (this part: {sizes[largest] // 1024} KiB)."
        )


def _json_size(value: Any) -> int:
    return 0 if value is None else len(json.dumps(value, default=str).encode())


def report_json_checked(errors: dict[str, list[str]], name: str, value: Any, *, max_bytes: int) -> Any:
    """Worker-supplied JSON: size-limited, and refused when it carries something that looks secret."""
    if value is None:
        return None
    problem = _json_shape_problem(value)
    if problem is not None:
        errors[name] = [problem]
        return None
    try:
        encoded = json.dumps(value, sort_keys=True, default=str, allow_nan=False)
    except (TypeError, ValueError):
        errors[name] = ["Not JSON-serialisable."]
        return None
    if len(encoded.encode()) > max_bytes:
        errors[name] = [f"At most {max_bytes // 1024} KiB of JSON."]
        return None
    # It lands in the tenant's dataset, which GenAI tools may read: keys that name a secret and values
    # that look like one are refused (the worker gets a 400 naming the field).
    found = find_secret_paths(value, name)
    if found:
        errors[name] = [
            "Looks like it holds a secret (tenant datasets are readable by GenAI tools): "
            + ", ".join(secret.path for secret in found[:5])
        ]
        return None
    return value


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _INT64_MAX


def _json_shape_problem(value: Any) -> str | None:
    """Objects and arrays nested deeper than MAX_JSON_DEPTH, or a number BigQuery's JSON cannot hold
    (NaN, Infinity, whole numbers past 64 bits: one would fail the statement that commits every report
    of its tick); None when fine. One iterative walk, so any depth is safe to ask."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, Mapping | list | tuple):
            if depth > MAX_JSON_DEPTH:
                return f"Nest at most {MAX_JSON_DEPTH} levels deep."
            children: Iterable[Any] = item.values() if isinstance(item, Mapping) else item
            pending.extend((child, depth + 1) for child in children)
        elif _number_out_of_range(item):
            return "Numbers must be finite, and whole numbers within 64 bits."
    return None


def _number_out_of_range(item: Any) -> bool:
    if isinstance(item, float):
        return not math.isfinite(item)
    return isinstance(item, int) and not isinstance(item, bool) and not -_INT64_MAX - 1 <= item <= _INT64_MAX


def report_text_redacted(text: str | None) -> str | None:
    """Error text from a worker, with anything that looks like a secret replaced."""
    if text is None:
        return None
    # Worker errors quote connection strings, headers and tracebacks (bearer tokens, JWTs, URL
    # passwords, service-account JSON...).
    return redact_secrets(str(text))[:MAX_ERROR_LENGTH]
