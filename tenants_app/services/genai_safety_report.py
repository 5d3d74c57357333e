"""What a GenAI-safety scan reports: findings (where and what kind, never the value), per-table counts.

The scan itself is genai_safety.py; schema checks and sampling of one table are genai_safety_tables.py,
the walk through values genai_safety_values.py.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

# Checks (what a finding is about) and the schema kinds; value kinds are tenants_app.secrets' kinds.
SCHEMA = "schema"
VALUES = "values"
UNKNOWN_TABLE = "unknown_table"
UNKNOWN_COLUMN = "unknown_column"
SECRET_NAMED_COLUMN = "secret_named_column"  # noqa: S105 - a kind, not a secret
VIEW_CHANGED = "view_definition_changed"
UNREADABLE_TABLE = "unreadable_table"


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
