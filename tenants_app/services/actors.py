"""Who acted, as `created_by`, `updated_by` and `revoked_by` record it, and what a tenant is shown of it.

Staff act as `user:<username>`, tenant keys as `apikey:<id>`, jobs under names of their own. A tenant
sees that staff acted, never which staff member (their names are ours to keep). The rule is here once:
`actor_masked` for the API's responses, `actor_masked_sql` (the same prefix and word, in SQL) for the
tenant's own BigQuery views, so the two can never disagree.
"""

from __future__ import annotations

import re

from bigquery_backend.identifiers import quote_column

STAFF_ACTOR_PREFIX = "user:"
MASKED_STAFF_ACTOR = "staff"
# Columns and response fields that name an actor.
ACTOR_FIELDS = frozenset({"created_by", "updated_by", "revoked_by"})

# The two constants are embedded in view SQL as literals: they must never need escaping.
_PLAIN_LITERAL = re.compile(r"^[a-z:]+$")


def actor_masked(actor: object) -> object:
    """`staff` for a staff member's actor, anything else (a key, a job, None) unchanged."""
    if isinstance(actor, str) and actor.startswith(STAFF_ACTOR_PREFIX):
        return MASKED_STAFF_ACTOR
    return actor


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
