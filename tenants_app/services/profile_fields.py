"""The rules of a tenant's profile fields, for every service that takes them (onboarding, profile edits).

Each cleaner adds its refusals to a shared `errors` dict, so a caller can report every bad field at once,
and returns the value as it will be stored: stripped of surrounding spaces, otherwise as typed (an
address keeps its case: its local part may be case-sensitive; comparisons lowercase both sides).
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from tenants_app.services.text_rules import bidi_check

COMPANY_NAME_LENGTH = (2, 200)
EMAIL_MAX_LENGTH = 254  # RFC 5321's limit on a path, and so on an address


def company_name_clean(errors: dict[str, list[str]], value: object, *, field: str = "company_name") -> str:
    company = value.strip() if isinstance(value, str) else ""
    low, high = COMPANY_NAME_LENGTH
    if not low <= len(company) <= high:
        errors.setdefault(field, []).append(f"Use {low}-{high} characters.")
    bidi_check(errors, field, company)
    return company


def admin_email_clean(errors: dict[str, list[str]], value: object, *, field: str = "admin_email") -> str:
    email = value.strip() if isinstance(value, str) else ""
    try:
        if len(email) > EMAIL_MAX_LENGTH:
            raise ValidationError("too long")
        validate_email(email)
    except ValidationError:
        errors.setdefault(field, []).append("Enter a valid email address.")
    # Django's validator lets a bidi control through in the domain part; it would reorder the address.
    bidi_check(errors, field, email)
    return email
