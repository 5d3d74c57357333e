"""The catalogue of pipeline templates: what a config may run, its parameters and the providers it needs.

The one place that says which templates exist. The API lists it (`GET /api/v1/pipeline-templates`),
`services/pipelines.py` checks a config against it when the config is created or its template or
parameters change, and the reference worker (`manage.py run_worker`) resolves a run's parameters
through it before `pipeline_execution.py` runs the template. A config row written before the catalogue
(or naming a template since removed) stays readable: only writes are checked.

Every template declares its parameters (name, type, required, default, help) and the providers of
cloud credentials a worker needs to run it against real BigQuery; on the emulator it needs none.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bigquery_backend.exceptions import InvalidIdentifier
from bigquery_backend.identifiers import check_column, check_table
from tenants_app.models import Provider
from tenants_app.services.errors import ValidationFailed

# Convergence's own tables and views in a tenant dataset all start so: a template never writes there.
RESERVED_TABLE_PREFIX = "tenant_"
MAX_SQL_LENGTH = 10_000
MAX_EXPECTATIONS = 50
EXPECTATION_TYPES = ("not_null", "unique", "row_count_between")
WRITE_MODES = ("overwrite", "append")
# `{{orders}}` in a source query: a table of the tenant's own dataset, replaced by its quoted path.
TABLE_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]{0,1023})\s*\}\}")
_LEADING_KEYWORD = re.compile(r"^\s*(SELECT|WITH)\b", re.IGNORECASE)
# A number with a decimal point (1.5, 2.5e3), not the digits ending a name (`t1.x`): see `_source_query`.
_DECIMAL = re.compile(r"(?<![A-Za-z0-9_])[0-9]+\.[0-9]+(?:[eE][+-]?[0-9]+)?")
_DQ_CONFIG_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


class ParameterError(ValueError):
    """One parameter's value is wrong; `path` extends the parameter's name (`[0].column`)."""

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.path = path


@dataclass(frozen=True)
class TemplateParameter:
    name: str
    type: str  # what the API lists: string, integer, boolean, table, choice, sql, object, expectations
    help: str
    required: bool = False
    default: Any = None
    choices: tuple[str, ...] = ()
    check: Callable[[Any], Any] = field(default=lambda value: value, repr=False, compare=False)


@dataclass(frozen=True)
class PipelineTemplate:
    name: str
    title: str
    description: str
    parameters: tuple[TemplateParameter, ...]
    providers: tuple[str, ...]
    # Groups of parameters of which exactly one must be given (`source_query` or `source_table`).
    exactly_one_of: tuple[tuple[str, ...], ...] = ()

    def parameter(self, name: str) -> TemplateParameter | None:
        return next((parameter for parameter in self.parameters if parameter.name == name), None)


# --- value checks -------------------------------------------------------------------------------------
def _table(value: Any) -> str:
    try:
        return check_table(value)
    except InvalidIdentifier:
        raise ParameterError(
            "Name a table of your dataset: letters, digits and _, starting with a letter or _."
        ) from None


def _writable_table(value: Any) -> str:
    name = _table(value)
    if name.lower().startswith(RESERVED_TABLE_PREFIX):
        raise ParameterError(f"Tables starting with {RESERVED_TABLE_PREFIX!r} are Convergence's own.")
    return name


def _column(value: Any, path: str) -> str:
    try:
        return check_column(value)
    except InvalidIdentifier:
        raise ParameterError("Name a column: letters, digits and _.", path=path) from None


def _choice(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise ParameterError(f"Choose one of {', '.join(choices)}.")
        return str(value)

    return check


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ParameterError("Use true or false.")
    return value


def _object(value: Any) -> dict[str, Any]:
    # Size, depth and secrets are checked for all parameters at once by services/pipelines.py.
    if not isinstance(value, dict):
        raise ParameterError("Use a JSON object.")
    return value


def _dq_config_id(value: Any) -> str:
    if not isinstance(value, str) or not _DQ_CONFIG_ID.fullmatch(value):
        raise ParameterError("Use 1-128 letters, digits and _ . : - (starting with a letter or digit).")
    return value


def _source_query(value: Any) -> str:
    """One SELECT that reads only the tenant's own tables, named `{{table}}`.

    The worker's BigQuery identity can read every dataset of the project, so the query must not be
    able to name one: a table outside the tenant's dataset always needs a qualified name
    (`dataset.table`, `project.dataset.table`, `region.INFORMATION_SCHEMA...`), so no dot may
    appear outside a number, quoted or not (a quoted one could be a backtick path), and backticks and
    statement separators are refused. Columns are therefore written unqualified.
    """
    if not isinstance(value, str) or not value.strip():
        raise ParameterError("Write one SELECT statement.")
    if len(value) > MAX_SQL_LENGTH:
        raise ParameterError(f"Use at most {MAX_SQL_LENGTH} characters.")
    if not _LEADING_KEYWORD.match(value):
        raise ParameterError("Write one SELECT statement (it may start with WITH).")
    if ";" in value or "`" in value:
        raise ParameterError("Use no ';' and no backticks: one statement, tables as {{table}}.")
    if "." in _DECIMAL.sub("", value):
        raise ParameterError(
            "Use no dotted names: write tables of your dataset as {{table}} and columns unqualified."
        )
    tables = TABLE_PLACEHOLDER.findall(value)
    if not tables:
        raise ParameterError("Read at least one table of your dataset, written {{table}}.")
    return value


def _expectations(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise ParameterError("Use a list of expectations (at least one).")
    if len(value) > MAX_EXPECTATIONS:
        raise ParameterError(f"Use at most {MAX_EXPECTATIONS} expectations.")
    return [_expectation(item, f"[{index}]") for index, item in enumerate(value)]


def _expectation(item: Any, path: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise ParameterError("Use an object with a 'type'.", path=path)
    kind = item.get("type")
    if kind not in EXPECTATION_TYPES:
        raise ParameterError(f"Choose one of {', '.join(EXPECTATION_TYPES)}.", path=f"{path}.type")
    allowed = {"type", "column"} if kind != "row_count_between" else {"type", "min", "max"}
    unknown = sorted(set(item) - allowed)
    if unknown:
        raise ParameterError(
            f"Not a field of {kind}: use {', '.join(sorted(allowed))}.", path=f"{path}.{unknown[0]}"
        )
    if kind != "row_count_between":
        return {"type": kind, "column": _column(item.get("column"), f"{path}.column")}
    bounds = {name: item.get(name) for name in ("min", "max")}
    for name, bound in bounds.items():
        if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int) or bound < 0):
            raise ParameterError("Use a whole number, 0 or more.", path=f"{path}.{name}")
    if bounds["min"] is None and bounds["max"] is None:
        raise ParameterError("Give min, max or both.", path=path)
    if None not in bounds.values() and bounds["min"] > bounds["max"]:
        raise ParameterError("Must not be below min.", path=f"{path}.max")
    return {"type": kind, **bounds}


_METADATA = TemplateParameter(
    "metadata",
    "object",
    "Free-form JSON kept with the config and copied into each run's record (no secrets); not read by "
    "the template.",
    check=_object,
)

SQL_TRANSFORM = PipelineTemplate(
    name="sql_transform",
    title="SQL transform",
    description=(
        "Runs one SELECT over tables of your dataset and writes its result into a table of your dataset, "
        "replacing it or appending to it. Give source_query or source_table."
    ),
    parameters=(
        TemplateParameter(
            "source_query",
            "sql",
            "One SELECT (or WITH ... SELECT) reading tables of your dataset written as {{table}}; "
            "columns unqualified, no dotted names.",
            check=_source_query,
        ),
        TemplateParameter("source_table", "table", "Copy this table of your dataset as it is.", check=_table),
        TemplateParameter(
            "destination_table",
            "table",
            f"The table of your dataset to write (names starting {RESERVED_TABLE_PREFIX!r} are reserved).",
            required=True,
            check=_writable_table,
        ),
        TemplateParameter(
            "write_mode",
            "choice",
            "overwrite replaces the table; append adds the rows (creating the table the first time).",
            default="overwrite",
            choices=WRITE_MODES,
            check=_choice(WRITE_MODES),
        ),
        _METADATA,
    ),
    providers=(Provider.GCP.value,),
    exactly_one_of=(("source_query", "source_table"),),
)

DATA_QUALITY = PipelineTemplate(
    name="data_quality",
    title="Data quality",
    description=(
        "Checks expectations (not_null, unique, row_count_between) over a table of your dataset; the "
        "result of each run lands in tenant_dq_results."
    ),
    parameters=(
        TemplateParameter(
            "target_table", "table", "The table of your dataset to check.", required=True, check=_table
        ),
        TemplateParameter(
            "expectations",
            "expectations",
            "A list of {type: not_null|unique, column} or {type: row_count_between, min, max}.",
            required=True,
            check=_expectations,
        ),
        TemplateParameter(
            "dq_config_id",
            "string",
            "Names this set of checks in tenant_dq_results.",
            default="default",
            check=_dq_config_id,
        ),
        TemplateParameter(
            "fail_on_error",
            "boolean",
            "true: a failed expectation fails the run; false: the run succeeds, its result says FAIL.",
            default=False,
            check=_boolean,
        ),
        _METADATA,
    ),
    providers=(Provider.GCP.value,),
)

TEMPLATES: dict[str, PipelineTemplate] = {
    template.name: template for template in (SQL_TRANSFORM, DATA_QUALITY)
}


# --- reads --------------------------------------------------------------------------------------------
def template_list() -> list[PipelineTemplate]:
    """Every template, by name."""
    return [TEMPLATES[name] for name in sorted(TEMPLATES)]


def template_get(name: str) -> PipelineTemplate | None:
    return TEMPLATES.get(name)


def template_check(value: str) -> PipelineTemplate:
    """The catalogue's template named `value`; ValidationFailed naming `pipeline_template` otherwise."""
    template = TEMPLATES.get(value)
    if template is None:
        message = f"Unknown template: choose one of {', '.join(sorted(TEMPLATES))}."
        raise ValidationFailed(message, errors={"pipeline_template": [message]})
    return template


def template_parameters_resolve(
    *, template: PipelineTemplate, parameters: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The parameters checked against the template, with defaults filled in.

    ValidationFailed names each wrong one as `parameters.<name>` (`parameters.expectations[0].column`).
    The config stores what was given; the worker resolves it again, so a changed default applies.
    """
    given = dict(parameters or {})
    errors: dict[str, list[str]] = {}
    resolved: dict[str, Any] = {}
    for name in sorted(set(given) - {parameter.name for parameter in template.parameters}):
        errors[f"parameters.{name}"] = [f"Not a parameter of {template.name}."]
    for parameter in template.parameters:
        value = given.get(parameter.name)
        if value is None:
            if parameter.required:
                errors[f"parameters.{parameter.name}"] = ["This parameter is required."]
            elif parameter.default is not None:
                resolved[parameter.name] = parameter.default
            continue
        try:
            resolved[parameter.name] = parameter.check(value)
        except ParameterError as exc:
            errors[f"parameters.{parameter.name}{exc.path}"] = [exc.message]
    for group in template.exactly_one_of:
        if sum(given.get(name) is not None for name in group) != 1:
            errors.setdefault(f"parameters.{group[0]}", []).append(
                f"Give exactly one of {' or '.join(group)}."
            )
    if errors:
        raise ValidationFailed(f"invalid parameters for template {template.name}", errors=errors)
    return resolved
