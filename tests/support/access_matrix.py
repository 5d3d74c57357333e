"""The access-control matrices' shared grammar: a table of expected statuses, one row per URL and method.

A matrix is a block of text, one row per line: `METHOD ROUTE [SCOPE] CELL CELL ...`, one cell per
principal (the header line names them). A cell is what that principal gets:

- `ok`: the access check passed. GET and HEAD must answer 200; a write may answer what its matrix
  allows (the API: 2xx, or 400/409 from a deliberately invalid body or a refused state change; the
  portal: the form again with its errors, or a redirect after the change). That is how the tests avoid
  changing shared state while still proving the request got past authentication and permissions.
- `login`: a redirect (302) to the portal's login page.
- a number (`302`, `401`, `403`, `404`, `405`, ...): exactly that status.
- `A/B`: the cell differs by tenant: `A` for the principal's own tenant, `B` for the other tenant's
  resource (e.g. `ok/404`: a tenant's key reaches its own run, and another tenant's run is not found).

Route placeholders (`{run}`) name a tenant's resource, filled in for tenant A or B; those starting with
`obj_` name something that belongs to no tenant in particular (a Django user, one table row), so such
a route is one cell per principal.

Lines starting with `#` and blank lines are ignored, so the table can carry comments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ALLOWED = "ok"
LOGIN = "login"
LOGIN_URL = "/admin/login/"
READ_METHODS = frozenset({"GET", "HEAD"})

_PLACEHOLDER = re.compile(r"\{[^}]+\}")
_TENANT_PLACEHOLDER = re.compile(r"\{(?!obj_)[^}]+\}")
_CONVERTER = re.compile(r"<[^>]+>")


@dataclass(frozen=True)
class Row:
    """One URL and method of a matrix, with the expected cell for each principal."""

    method: str
    route: str
    scope: str | None
    cells: dict[str, str]

    @property
    def name(self) -> str:
        return f"{self.method} {self.route}"

    @property
    def per_tenant(self) -> bool:
        """Whether the route names a tenant or a tenant's resource (so tenant B is a separate cell)."""
        return bool(_TENANT_PLACEHOLDER.search(self.route))

    def expected(self, principal: str, tenant: str) -> str:
        """The cell of `principal` for tenant "A" (its own) or "B" (the other one)."""
        own, _, other = self.cells[principal].partition("/")
        return other if tenant == "B" and other else own


def parse_matrix(text: str, *, with_scope: bool) -> tuple[list[str], list[Row]]:
    """(principal names, rows) of a matrix; raises ValueError on a malformed line so a typo fails loudly."""
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    header, *body = (line.split() for line in lines)
    fixed = 3 if with_scope else 2
    principals = header[fixed:]
    rows: list[Row] = []
    for words in body:
        if len(words) != fixed + len(principals):
            raise ValueError(f"matrix row {' '.join(words)!r} has {len(words)} columns, not {len(header)}")
        cells = dict(zip(principals, words[fixed:], strict=True))
        for cell in cells.values():
            for part in cell.split("/"):
                if part not in (ALLOWED, LOGIN) and not part.isdigit():
                    raise ValueError(f"matrix row {words[0]} {words[1]}: unknown cell {cell!r}")
        scope = words[2] if with_scope and words[2] != "-" else None
        rows.append(Row(method=words[0], route=words[1], scope=scope, cells=cells))
        if not rows[-1].per_tenant and any("/" in cell for cell in cells.values()):
            raise ValueError(f"matrix row {rows[-1].name}: no tenant in the route, so no A/B cell")
    names = [row.name for row in rows]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"matrix rows given twice: {duplicates}")
    return principals, rows


def matches(
    expected: str, *, method: str, status: int, location: str = "", allowed_writes: frozenset[int]
) -> bool:
    """Whether a response satisfies a cell; `allowed_writes` is what an allowed write may answer."""
    if expected == LOGIN:
        return status == 302 and location.startswith(LOGIN_URL)
    if expected != ALLOWED:
        return status == int(expected)
    if method in READ_METHODS:
        return status == 200
    return status in allowed_writes


def route_shape(route: str) -> str:
    """A route with every parameter blanked: `{run}` in a matrix and `<str:run_id>` in a URLconf agree."""
    return _CONVERTER.sub("<>", _PLACEHOLDER.sub("<>", route))
