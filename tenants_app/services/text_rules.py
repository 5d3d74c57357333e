"""Rules for the text that names things (ids and names), shared by every service that takes such a field.

Bidirectional control characters (embeddings, overrides, isolates and the invisible direction marks)
change the order in which the text around them is displayed: a company name ending in U+202E (RIGHT-TO-
LEFT OVERRIDE) shows the tenant id after it reversed, so one tenant's page could read as another's.
Names are plain labels, and right-to-left scripts need none of these characters to display correctly,
so they are refused where the value is taken, never stripped: what is stored is what was sent.
Pages still isolate every piece of user text (`<bdi>`, `dir="auto"`), for rows written before this rule.
"""

from __future__ import annotations

from tenants_app.services.errors import ValidationFailed

# U+202A-U+202E embeddings and overrides, U+2066-U+2069 isolates, U+200E/U+200F LRM/RLM, U+061C ALM.
BIDI_CONTROLS = frozenset(
    "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c",
)


def bidi_reason(value: object) -> str | None:
    """Why `value` cannot be an id or a name (it holds a bidi control character), or None."""
    if not isinstance(value, str):
        return None
    found = sorted({character for character in value if character in BIDI_CONTROLS})
    if not found:
        return None
    # Code points only: the characters themselves would reorder the error message too.
    named = ", ".join(f"U+{ord(character):04X}" for character in found)
    return (
        f"Remove the bidirectional control character(s) {named}: they can reorder the text shown around it."
    )


def bidi_check(errors: dict[str, list[str]], field: str, value: object) -> None:
    """Add the bidi refusal of `value` to `errors` under `field` (services that gather every error)."""
    reason = bidi_reason(value)
    if reason is not None:
        errors.setdefault(field, []).append(reason)


def bidi_require_none(field: str, value: object) -> None:
    """ValidationFailed naming `field` when `value` holds a bidi control (services that stop at the first)."""
    reason = bidi_reason(value)
    if reason is not None:
        raise ValidationFailed(f"{field}: {reason}", errors={field: [reason]})
