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

This module picks the datasets and runs the scan; one table's checks are in genai_safety_tables.py, the
walk through a value in genai_safety_values.py, and the report's types in genai_safety_report.py.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection
from concurrent.futures import Future
from dataclasses import dataclass, replace

from bigquery_backend.client import BigQueryGateway, get_gateway, map_error
from bigquery_backend.exceptions import BigQueryError, InvalidIdentifier, NotFound
from bigquery_backend.identifiers import check_dataset
from tenants_app.log_context import ContextThreadPoolExecutor
from tenants_app.models import TenantApiKey, TenantProfile
from tenants_app.repositories import central_repository
from tenants_app.services.api_key_verification import bigquery_errors_translated
from tenants_app.services.datasets import central_dataset
from tenants_app.services.errors import DoesNotExist, ValidationFailed
from tenants_app.services.genai_safety_report import Finding, GenaiSafetyReport, TableScan
from tenants_app.services.genai_safety_tables import scan_table

logger = logging.getLogger(__name__)

DEFAULT_SAMPLE_ROWS = 500
MAX_SAMPLE_ROWS = 10_000
# Tables read at a time. Each read is a round trip of ~0.5-2 s on BigQuery, so a project with many
# tenants is scanned in a fraction of the sequential time (the emulator runs statements one by one).
DEFAULT_WORKERS = 4
MAX_WORKERS = 16
_PROFILE_PAGE = 1_000
_FINGERPRINT = re.compile(r"^[0-9a-f]{8}$")


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
                        scan_table,
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
