"""Prove that tenant datasets hold no credentials: they are exposed to GenAI tools.

`genai_safety_scan` reads every tenant dataset (the `tenant_dataset_id` of each profile, or with
`all_datasets` every dataset of the project but the central one) and checks, per table or view:

1. Schema: the table is one of the declared tenant tables or onboarding's views, every column is one of
   its declared columns, no column is named like a secret, and a view still runs onboarding's query.
2. Values: a bounded sample (the newest `sample_rows` rows when the table is partitioned) of every
   STRING, JSON, BYTES, RECORD and REPEATED column, strings nested in JSON and records included, for
   the secrets of `tenants_app.secrets.find_secrets`, JSON fields named like a secret, and random-looking
   strings where a column or field name makes a secret plausible (keys, configuration, free text).

Findings name dataset, table, column (a path into JSON and records), the row's primary key and the
kind; never the value. A keyed fingerprint tells repeated leaks apart, and a leaked key of ours is looked
up by its hash (one query) to name the `api_key_id` to revoke. Cost: one API call to list each dataset's
tables, and per table one metadata call and one query (BigQuery bills the sampled columns in full: LIMIT
does not cut bytes scanned; TABLESAMPLE would, but it samples storage blocks, so a small table yields
no rows). Row keys that are themselves secrets, and secret-looking names, are shown by fingerprint.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from typing import Any

from google.cloud import bigquery

from bigquery_backend.client import BigQueryGateway, get_gateway, map_error
from bigquery_backend.exceptions import BackendUnavailable, BigQueryError, InvalidIdentifier, NotFound
from bigquery_backend.identifiers import check_column, check_dataset, quote_column, quote_table
from bigquery_backend.schema import TableDefinition, table_definition
from tenants_app.log_context import ContextThreadPoolExecutor
from tenants_app.models import TENANT_MODELS, TenantApiKey, TenantProfile
from tenants_app.repositories import central_repository
from tenants_app.secrets import (
    CONVERGENCE_KEY,
    GCP_SERVICE_ACCOUNT,
    SECRET_NAMED_FIELD,
    find_high_entropy,
    find_secrets,
    is_plain_name,
    is_secret_name,
    is_sensitive_name,
    is_service_account_info,
    is_suspicious_name,
)
from tenants_app.secrets import fingerprint as fingerprint_of
from tenants_app.services.api_key_verification import bigquery_errors_translated, hash_api_key
from tenants_app.services.datasets import central_dataset
from tenants_app.services.errors import DoesNotExist, ValidationFailed
from tenants_app.services.onboarding import VIEW_MODELS, tenant_view_query

logger = logging.getLogger(__name__)

DEFAULT_SAMPLE_ROWS = 500
MAX_SAMPLE_ROWS = 10_000
# Tables read at a time. Each read is a round trip of ~0.5-2 s on BigQuery, so a project with many
# tenants is scanned in a fraction of the sequential time (the emulator runs statements one by one).
DEFAULT_WORKERS = 4
MAX_WORKERS = 16
# One leak copied into every row of a column is one problem: report the first rows, count the rest.
MAX_FINDINGS_PER_COLUMN = 20
# JSON levels walked one by one; anything deeper is checked as text (see _walk).
MAX_WALK_DEPTH = 64
_PROFILE_PAGE = 1_000

# Checks (what a finding is about) and the schema kinds; value kinds are tenants_app.secrets' kinds.
SCHEMA = "schema"
VALUES = "values"
UNKNOWN_TABLE = "unknown_table"
UNKNOWN_COLUMN = "unknown_column"
SECRET_NAMED_COLUMN = "secret_named_column"  # noqa: S105 - a kind, not a secret
VIEW_CHANGED = "view_definition_changed"
UNREADABLE_TABLE = "unreadable_table"

_SCANNED_TYPES = frozenset({"STRING", "JSON", "BYTES", "RECORD", "STRUCT"})
_KEY_TYPES = frozenset({"STRING", "INTEGER", "INT64"})
_WHITESPACE = re.compile(r"\s+")
_FINGERPRINT = re.compile(r"^[0-9a-f]{8}$")


@dataclass(frozen=True)
class Finding:
    """One problem in one place. Never holds the secret, nor any part of it."""

    check: str
    kind: str
    dataset: str
    table: str
    column: str | None
    reason: str
    row_key: dict[str, str] | None = None
    fingerprint: str | None = None
    # For a leaked key of ours that is still on record: which one to revoke.
    api_key_id: str | None = None

    def location(self) -> str:
        place = f"{self.dataset}.{self.table}"
        if self.column:
            place += f" column {self.column}"
        if self.row_key:
            place += " row " + ", ".join(f"{k}={v}" for k, v in self.row_key.items())
        return place


@dataclass
class TableScan:
    """What was read of one table or view."""

    dataset: str
    table: str
    table_type: str
    declared: bool
    rows_sampled: int = 0
    columns_sampled: list[str] = field(default_factory=list)
    findings: int = 0
    findings_not_listed: int = 0


@dataclass
class GenaiSafetyReport:
    """The whole scan: what was read, what was found, and what could not be read."""

    sample_rows: int
    datasets: list[str] = field(default_factory=list)
    tables: list[TableScan] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    # Datasets named by a profile that do not exist (a tenant being onboarded or deleted), with why.
    skipped: dict[str, str] = field(default_factory=dict)
    # Findings whose fingerprint the caller reviewed and ignored: reported, but not failing the scan.
    ignored: list[Finding] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.findings

    @property
    def findings_not_listed(self) -> int:
        return sum(table.findings_not_listed for table in self.tables)

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(finding.kind for finding in self.findings).items()))

    def as_dict(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "sample_rows": self.sample_rows,
            "datasets": self.datasets,
            "skipped": self.skipped,
            "tables": [asdict(table) for table in self.tables],
            "findings": [asdict(finding) for finding in self.findings],
            "ignored": [asdict(finding) for finding in self.ignored],
            "summary": {
                "datasets": len(self.datasets),
                "tables": len(self.tables),
                "rows_sampled": sum(table.rows_sampled for table in self.tables),
                "findings": len(self.findings),
                "findings_not_listed": self.findings_not_listed,
                "ignored": len(self.ignored),
                "by_kind": self.counts(),
            },
        }


def genai_safety_scan(
    *,
    tenant_ids: list[str] | None = None,
    datasets: list[str] | None = None,
    all_datasets: bool = False,
    sample_rows: int = DEFAULT_SAMPLE_ROWS,
    ignore_fingerprints: Collection[str] = (),
    workers: int = DEFAULT_WORKERS,
    on_table: Callable[[TableScan, list[Finding]], None] | None = None,
    gateway: BigQueryGateway | None = None,
) -> GenaiSafetyReport:
    """Scan tenant datasets' schemas and a sample of their values for secrets and undeclared columns.

    Findings whose fingerprint is in `ignore_fingerprints` (reviewed false positives) are kept apart in
    `report.ignored` and do not make the report unclean. `workers` tables are read at a time.
    """
    errors: dict[str, list[str]] = {}
    if not _whole_number_in(sample_rows, 1, MAX_SAMPLE_ROWS):
        errors["sample_rows"] = [f"A whole number from 1 to {MAX_SAMPLE_ROWS}."]
    if not _whole_number_in(workers, 1, MAX_WORKERS):
        errors["workers"] = [f"A whole number from 1 to {MAX_WORKERS}."]
    ignored = set(ignore_fingerprints)
    if any(not isinstance(f, str) or not _FINGERPRINT.fullmatch(f) for f in ignored):
        errors["ignore_fingerprints"] = [
            "Fingerprints are 8 lowercase hex characters, as the report prints them."
        ]
    if errors:
        raise ValidationFailed("invalid scan options", errors=errors)
    gateway = gateway or get_gateway()
    targets = genai_safety_targets(
        tenant_ids=tenant_ids, datasets=datasets, all_datasets=all_datasets, gateway=gateway
    )
    report = GenaiSafetyReport(sample_rows=sample_rows, skipped=dict(targets.skipped))
    key_hashes: dict[int, str] = {}  # finding index -> sha256 of the key of ours it found
    with (
        bigquery_errors_translated(),
        # The pool's lines (BigQuery calls) keep the caller's log context: request id, actor.
        ContextThreadPoolExecutor(max_workers=workers, thread_name_prefix="genai-safety") as pool,
    ):
        try:
            listings = {d: pool.submit(_table_ids, gateway, d) for d in targets.datasets}
            scans: list[Future[tuple[TableScan | None, list[Finding], dict[int, str]]]] = []
            for dataset_id, tenant_id in targets.datasets.items():
                table_ids = listings[dataset_id].result()
                if table_ids is None:
                    report.skipped[dataset_id] = "dataset not found"
                    continue
                report.datasets.append(dataset_id)
                scans += [
                    pool.submit(
                        _scan_table,
                        gateway,
                        dataset_id,
                        table_id,
                        tenant_id=tenant_id,
                        sample_rows=sample_rows,
                    )
                    for table_id in table_ids
                ]
            # Merged in submission order: the report reads the same whatever the number of workers.
            for future in scans:
                scan, findings, hashes = future.result()
                if scan is None:
                    continue
                report.tables.append(scan)
                kept = []
                for index, finding in enumerate(findings):
                    if finding.fingerprint in ignored:
                        report.ignored.append(finding)
                        scan.findings -= 1
                        continue
                    if index in hashes:
                        key_hashes[len(report.findings)] = hashes[index]
                    report.findings.append(finding)
                    kept.append(finding)
                if on_table is not None:
                    on_table(scan, kept)
        except BaseException:
            # Queued reads would each wait out the retry deadline against a BigQuery that is gone.
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        _name_leaked_keys(report, key_hashes)
    # Counts and kinds only: a finding's location is safe to log, but one line per run is enough to alert on.
    logger.log(
        logging.INFO if report.clean else logging.WARNING,
        "genai safety scan: %d dataset(s), %d table(s), %d row(s) sampled, %d finding(s) %s, %d ignored",
        len(report.datasets),
        len(report.tables),
        sum(table.rows_sampled for table in report.tables),
        len(report.findings) + report.findings_not_listed,
        report.counts(),
        len(report.ignored),
    )
    return report


def _table_ids(gateway: BigQueryGateway, dataset_id: str) -> list[str] | None:
    """The dataset's tables and views, sorted; None when the dataset does not exist."""
    try:
        return sorted(gateway.list_table_ids(dataset_id))
    except NotFound:
        return None


def _whole_number_in(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


@dataclass(frozen=True)
class ScanTargets:
    """The datasets a scan reads (each with the tenant whose profile names it, if any), and the rest."""

    datasets: dict[str, str | None]
    skipped: dict[str, str]


def genai_safety_targets(
    *,
    tenant_ids: list[str] | None = None,
    datasets: list[str] | None = None,
    all_datasets: bool = False,
    gateway: BigQueryGateway | None = None,
) -> ScanTargets:
    """Every profile's dataset; or those of `tenant_ids` plus `datasets`; or (`all_datasets`) every one.

    The central dataset is never a target: it holds credentials by design and GenAI tools are denied it.
    """
    if all_datasets and (tenant_ids or datasets):
        raise ValidationFailed(
            "all datasets means all of them",
            errors={"all_datasets": ["Not together with tenants or datasets."]},
        )
    central = central_dataset()
    errors: dict[str, list[str]] = {}
    wanted: list[str] = []
    for dataset_id in datasets or ():
        try:
            wanted.append(check_dataset(dataset_id))
        except InvalidIdentifier:
            errors.setdefault("datasets", []).append(f"{str(dataset_id)[:100]!r} is not a dataset id.")
    if central in wanted:
        errors.setdefault("datasets", []).append(f"{central} is the central dataset, not a tenant's.")
    if errors:
        raise ValidationFailed("invalid datasets", errors=errors)
    gateway = gateway or get_gateway()
    skipped: dict[str, str] = {}
    owners: dict[str, str | None] = {}
    with bigquery_errors_translated():
        explicit = tenant_ids is not None or datasets is not None
        for profile in _profiles(tenant_ids=tenant_ids, datasets=wanted, explicit=explicit):
            try:
                owners[check_dataset(profile.tenant_dataset_id)] = profile.tenant_id
            except InvalidIdentifier:
                skipped[str(profile.tenant_dataset_id)[:100]] = (
                    f"tenant {profile.tenant_id}: not a dataset id"
                )
        for dataset_id in wanted:
            owners.setdefault(dataset_id, None)
        if all_datasets:
            for dataset_id in _project_datasets(gateway):
                owners.setdefault(dataset_id, None)
    owners.pop(central, None)
    return ScanTargets(datasets=dict(sorted(owners.items())), skipped=skipped)


def _profiles(*, tenant_ids: list[str] | None, datasets: list[str], explicit: bool) -> list[TenantProfile]:
    """All profiles, or those of the named tenants and datasets (an unknown tenant is refused)."""
    repository = central_repository(TenantProfile)
    fields = ("tenant_id", "tenant_dataset_id")
    if explicit:
        found: list[TenantProfile] = []
        if tenant_ids:
            wanted = sorted(set(tenant_ids))
            found = repository.list(filters={"tenant_id__in": wanted}, fields=fields, limit=len(wanted))
            missing = sorted(set(wanted) - {profile.tenant_id for profile in found})
            if missing:
                raise DoesNotExist(
                    f"no such tenant: {', '.join(missing)}",
                    errors={"tenant_ids": [f"Unknown: {', '.join(missing)}"]},
                )
        if datasets:
            found += repository.list(
                filters={"tenant_dataset_id__in": sorted(set(datasets))}, fields=fields, limit=_PROFILE_PAGE
            )
        return found
    profiles: list[TenantProfile] = []
    while True:
        page = repository.list(
            order_by=("tenant_id",), fields=fields, limit=_PROFILE_PAGE, offset=len(profiles)
        )
        profiles.extend(page)
        if len(page) < _PROFILE_PAGE:
            return profiles


def _project_datasets(gateway: BigQueryGateway) -> list[str]:
    # The gateway has no dataset listing (nothing else needs one): call the client with the gateway's
    # own bounds, and map errors the same way.
    try:
        return [
            dataset.dataset_id
            for dataset in gateway.client.list_datasets(
                gateway.project, retry=gateway.retry, timeout=gateway.timeout
            )
        ]
    except BigQueryError:
        raise
    except Exception as exc:
        raise map_error(exc) from exc


# --- one table --------------------------------------------------------------------------------------
@cache
def _declared() -> tuple[dict[str, TableDefinition], dict[str, TableDefinition]]:
    """The tables and views a tenant dataset may hold, by name (built once, whole, before any use)."""
    tables = {table_definition(m).name: table_definition(m) for m in TENANT_MODELS}
    views = {table_definition(m).name: table_definition(m) for m in VIEW_MODELS}
    return tables, views


def _scan_table(
    gateway: BigQueryGateway,
    dataset_id: str,
    table_id: str,
    *,
    tenant_id: str | None,
    sample_rows: int,
) -> tuple[TableScan | None, list[Finding], dict[int, str]]:
    """The table's scan, its findings, and the key hash behind each finding of a key of ours (by index)."""
    tables, views = _declared()
    name = _safe_name(table_id)
    try:
        live = gateway.get_table(dataset_id, table_id)
    except InvalidIdentifier:
        # BigQuery allows table names our strict identifier rules refuse: such a table was not made by
        # us, and it cannot be quoted safely, so it is reported without reading it.
        scan = TableScan(dataset=dataset_id, table=name, table_type="UNKNOWN", declared=False, findings=1)
        finding = Finding(
            check=SCHEMA,
            kind=UNKNOWN_TABLE,
            dataset=dataset_id,
            table=name,
            column=None,
            reason="table not declared for tenant datasets (name not readable safely: values not sampled)",
        )
        return scan, [finding], {}
    except NotFound:
        return None, [], {}  # dropped between listing and reading
    table_type = str(live.table_type or "TABLE")
    is_view = table_type == "VIEW"
    # Ours are plain tables and views: a materialized view, external table or snapshot is never ours,
    # whatever its name.
    definition = {"TABLE": tables, "VIEW": views}.get(table_type, {}).get(table_id)
    scan = TableScan(dataset=dataset_id, table=name, table_type=table_type, declared=definition is not None)
    schema = list(live.schema)
    unreadable: list[Finding] = []
    try:
        if schema or not is_view:
            readable = [f for f in schema if _scanned(f) and _quotable(f.name)]
            key_column = _key_column(schema, definition)
            rows = _sample(
                gateway, dataset_id, table_id, readable, key_column, schema, definition, sample_rows
            )
        else:
            # The emulator lists no columns for a view (BigQuery does): read such a view whole and
            # take its columns from the rows, so its values and column names are still checked.
            rows = _sample(gateway, dataset_id, table_id, None, None, schema, None, sample_rows)
            names = dict.fromkeys(key for row in rows for key in row)
            schema = [bigquery.SchemaField(column, "STRING") for column in names]
            readable = schema
            key_column = _key_column(schema, definition)
    except (BackendUnavailable, NotFound):
        raise
    except BigQueryError as exc:
        # A view over a table it may no longer read, or a type the client cannot decode: the table
        # cannot be vouched for, which is itself a finding.
        logger.warning("genai safety: cannot sample %s.%s: %s", dataset_id, name, exc)
        readable, key_column, rows = [], None, []
        unreadable.append(
            Finding(
                check=VALUES,
                kind=UNREADABLE_TABLE,
                dataset=dataset_id,
                table=name,
                column=None,
                reason=f"sample query failed ({type(exc).__name__}): values not checked",
            )
        )
    findings = _schema_findings(gateway, live, schema, dataset_id, name, definition, tenant_id=tenant_id)
    findings += unreadable
    scan.rows_sampled = len(rows)
    scan.columns_sampled = [f.name for f in readable]
    key_hashes: dict[int, str] = {}
    per_column: Counter[tuple[str, str]] = Counter()
    for row in rows:
        row_key = _row_key(row, key_column)
        for schema_field in readable:
            for hit in _walk(row.get(schema_field.name), schema_field.name, _suspicious(schema_field.name)):
                per_column[(hit.path, hit.kind)] += 1
                if per_column[(hit.path, hit.kind)] > MAX_FINDINGS_PER_COLUMN:
                    scan.findings_not_listed += 1
                    continue
                if hit.key_hash is not None:
                    key_hashes[len(findings)] = hit.key_hash
                findings.append(
                    Finding(
                        check=VALUES,
                        kind=hit.kind,
                        dataset=dataset_id,
                        table=name,
                        column=hit.path,
                        reason=hit.reason,
                        row_key=row_key,
                        fingerprint=hit.fingerprint,
                    )
                )
    scan.findings = len(findings) + scan.findings_not_listed
    return scan, findings, key_hashes


def _schema_findings(
    gateway: BigQueryGateway,
    live: bigquery.Table,
    schema: Sequence[bigquery.SchemaField],
    dataset_id: str,
    table: str,
    definition: TableDefinition | None,
    *,
    tenant_id: str | None,
) -> list[Finding]:
    findings: list[Finding] = []

    def add(kind: str, column: str | None, reason: str) -> None:
        findings.append(
            Finding(check=SCHEMA, kind=kind, dataset=dataset_id, table=table, column=column, reason=reason)
        )

    if definition is None:
        what = str(live.table_type or "TABLE").lower().replace("_", " ")
        add(UNKNOWN_TABLE, None, f"{what} not declared for tenant datasets (tenants_app/models.py)")
    declared = set(definition.column_names) if definition is not None else set()
    for path in _column_paths(schema):
        if definition is not None and path not in declared:
            add(UNKNOWN_COLUMN, _safe_name(path), "column not declared for this table")
        if is_sensitive_name(path):
            add(SECRET_NAMED_COLUMN, _safe_name(path), "column named like a secret")
    # BigQuery always returns a view's query; the emulator returns none, so there is nothing to compare
    # (its columns are still checked above, which catches a view onto another table).
    if definition is not None and live.table_type == "VIEW" and tenant_id is not None and live.view_query:
        expected = tenant_view_query(gateway.project, definition.model, tenant_id)
        if _normalized(live.view_query) != _normalized(expected):
            add(VIEW_CHANGED, None, "view query differs from onboarding's (it may read other tables or rows)")
    return findings


def _sample(
    gateway: BigQueryGateway,
    dataset_id: str,
    table_id: str,
    columns: Sequence[bigquery.SchemaField] | None,
    key_column: str | None,
    schema: Sequence[bigquery.SchemaField],
    definition: TableDefinition | None,
    sample_rows: int,
) -> list[dict[str, Any]]:
    """Up to `sample_rows` rows of `columns` (and the key), newest first when partitioned; None: all."""
    if columns is not None and not columns:
        return []
    if columns is None:
        select = "*"
    else:
        names = [f.name for f in columns]
        if key_column is not None and key_column not in names:
            names.insert(0, key_column)
        select = ", ".join(quote_column(n) for n in names)
    # Identifiers only through quote_column/quote_table (checked names), the size as a parameter.
    sql = f"SELECT {select} FROM {quote_table(gateway.project, dataset_id, table_id)}"  # noqa: S608
    partition = definition.spec.partition_field if definition is not None else None
    if partition and partition in {f.name for f in schema}:
        # The newest rows: where a new leak shows up first, and the same rows on every run of a check.
        sql += f" ORDER BY {quote_column(partition)} DESC"
    sql += " LIMIT @sample_rows"
    return gateway.query(sql, [bigquery.ScalarQueryParameter("sample_rows", "INT64", sample_rows)]).rows


# --- values -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Hit:
    """A secret found while walking one value: where and what, plus the hash of a key of ours."""

    path: str
    kind: str
    reason: str
    fingerprint: str
    key_hash: str | None = None


def _walk(value: Any, path: str, suspicious: bool, depth: int = 0) -> Iterator[_Hit]:
    """Every secret in a value; JSON objects, arrays and records walked through, field names included."""
    if value is None or isinstance(value, bool | int | float):
        return
    if isinstance(value, bytes | bytearray | memoryview):
        value = bytes(value).decode("utf-8", "replace")
    if isinstance(value, str):
        yield from _text_hits(value, path, suspicious)
        return
    if depth >= MAX_WALK_DEPTH:
        # BigQuery JSON nests up to 500 levels, deeper than Python recursion goes: below this depth
        # the rest is checked as one text, at the path reached so far.
        yield from _text_hits(json.dumps(value, default=str), f"{path}…", suspicious)
        return
    if isinstance(value, Mapping):
        if is_service_account_info(value):
            text = json.dumps(value, sort_keys=True, default=str)
            yield _Hit(
                path,
                GCP_SERVICE_ACCOUNT,
                "GCP service-account key JSON (type service_account with private_key)",
                fingerprint_of(text),
            )
            return
        for raw_key, item in value.items():
            key = str(raw_key)
            key_hits = list(_text_hits(key, path, suspicious=True))
            if key_hits:
                # The field name is the secret: the path names it by fingerprint only.
                child = f"{path}.<field {key_hits[0].fingerprint}>"
                yield from (
                    _Hit(child, h.kind, f"field name: {h.reason}", h.fingerprint, h.key_hash)
                    for h in key_hits
                )
            else:
                child = f"{path}.{key}"
            # Below a suspicious field everything is, except ids, counts and times (`job_id`).
            child_suspicious = is_suspicious_name(key) or (suspicious and not is_plain_name(key))
            inner = list(_walk(item, child, child_suspicious, depth + 1))
            yield from inner
            if not inner and is_secret_name(key) and _holds_something(item):
                yield _Hit(
                    child,
                    SECRET_NAMED_FIELD,
                    "JSON field named like a secret holds a value",
                    fingerprint_of(
                        item if isinstance(item, str) else json.dumps(item, sort_keys=True, default=str)
                    ),
                )
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _walk(item, f"{path}[{index}]", suspicious, depth + 1)


def _holds_something(value: Any) -> bool:
    """A non-empty text, object or array: what a field named `password` or `credentials` must not hold."""
    if isinstance(value, str):
        return bool(value.strip())
    return isinstance(value, Mapping | list | tuple) and bool(value)


def _text_hits(text: str, path: str, suspicious: bool) -> Iterator[_Hit]:
    matches = find_secrets(text)
    if not matches and suspicious:
        matches = find_high_entropy(text)
    for match in matches:
        secret = text[match.start : match.end]
        key_hash = hash_api_key(secret) if match.kind == CONVERGENCE_KEY and secret.isascii() else None
        yield _Hit(path, match.kind, match.reason, fingerprint_of(secret), key_hash)


def _name_leaked_keys(report: GenaiSafetyReport, key_hashes: dict[int, str]) -> None:
    """Name the key behind each leaked key of ours that is on record, so it can be revoked (one query)."""
    if not key_hashes:
        return
    wanted = sorted(set(key_hashes.values()))
    rows = central_repository(TenantApiKey).list(
        filters={"api_key_hash__in": wanted}, fields=("api_key_id", "api_key_hash"), limit=len(wanted)
    )
    key_ids = {row.api_key_hash: row.api_key_id for row in rows}
    for index, key_hash in key_hashes.items():
        if key_hash in key_ids:
            report.findings[index] = replace(report.findings[index], api_key_id=key_ids[key_hash])


# --- helpers ----------------------------------------------------------------------------------------
def _scanned(schema_field: bigquery.SchemaField) -> bool:
    return schema_field.field_type.upper() in _SCANNED_TYPES


def _suspicious(name: str) -> bool:
    return is_suspicious_name(name)


def _quotable(name: str) -> bool:
    try:
        check_column(name)
    except InvalidIdentifier:
        return False
    return True


def _key_column(schema: Sequence[bigquery.SchemaField], definition: TableDefinition | None) -> str | None:
    """The declared primary key, or for an unknown table its first `id`/`*_id` column, if readable."""
    names = {f.name: f for f in schema}
    if definition is not None:
        return definition.key if definition.key in names else None
    for schema_field in schema:
        if (
            (schema_field.name == "id" or schema_field.name.endswith("_id"))
            and schema_field.field_type.upper() in _KEY_TYPES
            and schema_field.mode != "REPEATED"
            and _quotable(schema_field.name)
        ):
            return schema_field.name
    return None


def _row_key(row: Mapping[str, Any], key_column: str | None) -> dict[str, str] | None:
    if key_column is None:
        return None
    value = row.get(key_column)
    text = "" if value is None else str(value)
    if find_secrets(text):
        # The key itself is a secret: name it by fingerprint only.
        return {key_column: f"<redacted {fingerprint_of(text)}>"}
    return {key_column: text[:200]}


def _column_paths(schema: Sequence[bigquery.SchemaField], prefix: str = "") -> Iterator[str]:
    for schema_field in schema:
        path = f"{prefix}{schema_field.name}"
        yield path
        if schema_field.fields:
            yield from _column_paths(schema_field.fields, prefix=f"{path}.")


def _safe_name(name: str) -> str:
    """A table or column name for the report, unless the name itself carries a secret."""
    if find_secrets(name):
        return f"<name {fingerprint_of(name)}>"
    return name


def _normalized(sql: str | None) -> str:
    return _WHITESPACE.sub(" ", (sql or "").strip()).rstrip(";")
