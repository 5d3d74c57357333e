"""Identifier checks: the only gate between a name and SQL text."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bigquery_backend.exceptions import InvalidIdentifier, InvalidInput
from bigquery_backend.identifiers import (
    check_column,
    check_dataset,
    check_project,
    check_table,
    quote_column,
    quote_table,
)

Checker = Callable[[object], str]

# Names that must never reach SQL, whatever the kind of identifier.
HOSTILE_NAMES = [
    pytest.param("it's", id="quote"),
    pytest.param('say"hi', id="double-quote"),
    pytest.param("two words", id="space"),
    pytest.param("back`tick", id="backtick"),
    pytest.param("x;DROP", id="semicolon"),
    pytest.param("line\nbreak", id="newline"),
    pytest.param("trailing\n", id="trailing-newline"),
    pytest.param("tab\there", id="tab"),
    pytest.param("", id="empty"),
    pytest.param("tablé", id="unicode-accent"),
    pytest.param("таблица", id="unicode-cyrillic"),
    pytest.param("x\u200b", id="zero-width-space"),
    pytest.param("a.b", id="dot"),
    pytest.param("a/*c*/", id="comment"),
    pytest.param("a\\b", id="backslash"),
    pytest.param("a\x00b", id="nul"),
]

CHECKERS = [
    pytest.param(check_dataset, id="dataset"),
    pytest.param(check_table, id="table"),
    pytest.param(check_column, id="column"),
    pytest.param(check_project, id="project"),
]


@pytest.mark.parametrize("check", CHECKERS)
@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_it_refuses_a_hostile_name(check: Checker, name: str) -> None:
    with pytest.raises(InvalidIdentifier):
        check(name)


@pytest.mark.parametrize("check", CHECKERS)
@pytest.mark.parametrize("value", [None, 42, b"widgets", ["widgets"]], ids=["none", "int", "bytes", "list"])
def test_it_refuses_a_name_that_is_not_a_string(check: Checker, value: object) -> None:
    with pytest.raises(InvalidIdentifier):
        check(value)


@pytest.mark.parametrize(
    ("check", "name"),
    [
        (check_dataset, "tenants"),
        (check_dataset, "Tenant_42"),
        (check_dataset, "42"),
        (check_dataset, "_private"),
        (check_table, "tenant_profiles"),
        (check_table, "_staging"),
        (check_table, "T2"),
        (check_column, "created_at"),
        (check_column, "_hidden"),
        (check_column, "by"),
        (check_project, "convergence-local"),
        (check_project, "my-project-123"),
    ],
)
def test_it_accepts_a_good_name_unchanged(check: Checker, name: str) -> None:
    assert check(name) == name


@pytest.mark.parametrize(
    ("check", "longest"),
    [(check_dataset, 1024), (check_table, 1024), (check_column, 300), (check_project, 30)],
    ids=["dataset", "table", "column", "project"],
)
def test_it_accepts_the_longest_name_bigquery_allows_and_refuses_one_more(
    check: Checker, longest: int
) -> None:
    # BigQuery's documented limits: datasets and tables 1024 characters, columns 300, projects 30.
    assert check("a" * longest) == "a" * longest
    with pytest.raises(InvalidIdentifier):
        check("a" * (longest + 1))


@pytest.mark.parametrize("check", [check_table, check_column], ids=["table", "column"])
def test_it_refuses_a_table_or_column_starting_with_a_digit(check: Checker) -> None:
    with pytest.raises(InvalidIdentifier):
        check("1st")


@pytest.mark.parametrize(
    "check", [check_dataset, check_table, check_column], ids=["dataset", "table", "column"]
)
def test_it_refuses_a_dash_where_bigquery_would_need_quoting(check: Checker) -> None:
    with pytest.raises(InvalidIdentifier):
        check("my-name")


@pytest.mark.parametrize(
    "name",
    ["short", "Upper-case", "1starts-with-digit", "ends-with-dash-", "has_underscore", "a" * 31],
)
def test_it_refuses_a_malformed_project_id(name: str) -> None:
    with pytest.raises(InvalidIdentifier):
        check_project(name)


def test_it_reports_the_kind_and_value_of_a_refused_name() -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        check_table("x;DROP")
    assert "x;DROP" in str(caught.value)
    assert list(caught.value.errors) == ["table"]


def test_it_makes_a_refused_identifier_an_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        check_column("a b")


def test_it_backtick_quotes_a_checked_column() -> None:
    assert quote_column("select") == "`select`"


@pytest.mark.parametrize("name", ["a`b", "a b", "a;b", "a'b", ""])
def test_it_refuses_to_quote_a_bad_column(name: str) -> None:
    with pytest.raises(InvalidIdentifier):
        quote_column(name)


def test_it_quotes_a_fully_qualified_table_as_one_path() -> None:
    assert quote_table("convergence-local", "tenants", "tenant_profiles") == (
        "`convergence-local.tenants.tenant_profiles`"
    )


@pytest.mark.parametrize(
    ("project", "dataset", "table"),
    [
        ("convergence-local", "tenants`; DROP", "widgets"),
        ("convergence-local", "tenants", "widgets` x"),
        ("convergence-local", "tenants.other", "widgets"),
        ("convergence`local", "tenants", "widgets"),
    ],
    ids=["dataset", "table", "dotted-dataset", "project"],
)
def test_it_refuses_to_quote_a_table_with_any_bad_part(project: str, dataset: str, table: str) -> None:
    with pytest.raises(InvalidIdentifier):
        quote_table(project, dataset, table)
