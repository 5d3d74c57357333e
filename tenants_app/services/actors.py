"""Who acted, as the `*_by` columns, `trigger_by` and the audit log's `actor` record it, and who sees what.

One naming, `<kind>:<name>`, recorded everywhere an actor is stored:

- `user:<username>`: a person with a Django account, i.e. staff (portal session or admin token), and
  the account behind a pipeline-worker token;
- `apikey:<api_key_id>`: a tenant's API key;
- `system:<job>`: a command or periodic job (`system:schedule_pipelines`, `system:roll_over_usage`);
- `cli:<os user>`: a person at a shell, by default for `manage.py onboard_tenant` (which takes
  `--created-by` to record anything else);
- `config:<config_id>`: the schedule that triggered a run (`trigger_by` only).

Who is shown what:

- Staff callers (admin token, portal session) see every actor exactly as recorded, in every response
  and page, the audit log included.
- A tenant (its API keys, its own BigQuery dataset) sees that staff acted, never which staff member
  (their names are ours to keep): every `user:<...>` reads `staff`, everywhere and at any depth (the
  audit entries' before/after values too); keys, jobs and configs read as recorded. `staff` is a
  bare word, not `user:staff`, so no tenant can mistake it for an account name, and because tenant
  datasets already hold it in rows written before this rule was stated.

The rule is here once: `actor_masked`/`actors_masked` for the API's responses, `actor_masked_sql` (the
same prefix and word, in SQL) for the tenant's own BigQuery views, over the same `ACTOR_FIELDS`, so the
two can never disagree.
"""

from __future__ import annotations

import re

from bigquery_backend.identifiers import quote_column

STAFF_ACTOR_PREFIX = "user:"
API_KEY_ACTOR_PREFIX = "apikey:"
MASKED_STAFF_ACTOR = "staff"
# Columns and response fields that name an actor (at any depth of a response body).
ACTOR_FIELDS = frozenset({"created_by", "updated_by", "revoked_by", "deleted_by", "trigger_by", "actor"})

# The two constants are embedded in view SQL as literals: they must never need escaping.
_PLAIN_LITERAL = re.compile(r"^[a-z:]+$")


SYSTEM_ACTOR_PREFIX = "system:"
# Who acted when nothing says who (a row written by an older version, a call without an actor).
UNKNOWN_ACTOR = f"{SYSTEM_ACTOR_PREFIX}unknown"


def system_actor(job: str) -> str:
    """How a command or periodic job is recorded: `system:<job>`."""
    return f"{SYSTEM_ACTOR_PREFIX}{job}"


def staff_actor(username: str) -> str:
    """How a person with a Django account (staff, or a worker token's account) is recorded."""
    return f"{STAFF_ACTOR_PREFIX}{username}"


def api_key_actor(api_key_id: str) -> str:
    """How a tenant's API key is recorded."""
    return f"{API_KEY_ACTOR_PREFIX}{api_key_id}"


def actor_masked(actor: object) -> object:
    """`staff` for a staff member's actor, anything else (a key, a job, None) unchanged."""
    if isinstance(actor, str) and actor.startswith(STAFF_ACTOR_PREFIX):
        return MASKED_STAFF_ACTOR
    return actor


def actors_masked(data: object) -> object:
    """`data` (JSON-like) with `actor_masked` applied to every `ACTOR_FIELDS` value, at any depth."""
    if isinstance(data, list):
        return [actors_masked(item) for item in data]
    if isinstance(data, dict):
        return {
            key: actor_masked(value) if key in ACTOR_FIELDS else actors_masked(value)
            for key, value in data.items()
        }
    return data


def actor_masked_sql(column: str) -> str:
    """BigQuery SQL of `actor_masked` applied to `column` (NULL stays NULL), named after the column."""
    for literal in (STAFF_ACTOR_PREFIX, MASKED_STAFF_ACTOR):
        if not _PLAIN_LITERAL.fullmatch(literal):
            raise ValueError(f"{literal!r} cannot be embedded in SQL as it is")
    quoted = quote_column(column)
    return (
        f"CASE WHEN STARTS_WITH({quoted}, '{STAFF_ACTOR_PREFIX}') THEN '{MASKED_STAFF_ACTOR}' "
        f"ELSE {quoted} END AS {quoted}"
    )
