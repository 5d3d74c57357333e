"""Identifier checks: the only way a name reaches SQL text is through `quote()`."""

from __future__ import annotations

import re

from bigquery_backend.exceptions import InvalidIdentifier

# Stricter than BigQuery itself allows (no dashes, unicode or spaces in datasets and tables) so
# that a checked name can be backtick-quoted with nothing left to escape.
PROJECT_PATTERN = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
DATASET_PATTERN = re.compile(r"^[A-Za-z0-9_]{1,1024}$")
TABLE_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,1023}$")
COLUMN_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,299}$")


def _check(kind: str, value: object, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidIdentifier(
            f"{kind} name {value!r} is not allowed: use letters, digits and underscores only",
            errors={kind: [f"{value!r} does not match {pattern.pattern}"]},
        )
    return value


def check_project(value: object) -> str:
    """Return `value` if it is a valid Google Cloud project id, else raise InvalidIdentifier."""
    return _check("project", value, PROJECT_PATTERN)


def check_dataset(value: object) -> str:
    """Return `value` if it is a safe dataset id, else raise InvalidIdentifier."""
    return _check("dataset", value, DATASET_PATTERN)


def check_table(value: object) -> str:
    """Return `value` if it is a safe table id, else raise InvalidIdentifier."""
    return _check("table", value, TABLE_PATTERN)


def check_column(value: object) -> str:
    """Return `value` if it is a safe column name, else raise InvalidIdentifier."""
    return _check("column", value, COLUMN_PATTERN)


def quote_column(name: str) -> str:
    """Backtick-quote a checked column: quoting also keeps reserved words (`by`, `at`) usable."""
    return f"`{check_column(name)}`"


def quote_table(project: str, dataset: str, table: str) -> str:
    """Fully qualified, backtick-quoted table path after checking each part."""
    return f"`{check_project(project)}.{check_dataset(dataset)}.{check_table(table)}`"
