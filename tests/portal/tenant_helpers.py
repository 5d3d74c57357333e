"""The `onboard` fixture of the tenant page tests (detail, wizard, operations), imported by their modules,
and what they read their pages with.

It builds on tests/portal/conftest.py (`portal_dataset`, the logged-in clients): each test onboards its
own tenants, with unique ids and datasets, so tests never see each other's rows.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

import pytest
from django.urls import reverse

from tenants_app.services.onboarding import OnboardingResult, tenant_onboard

Onboard = Callable[..., OnboardingResult]


def new_tenant_id() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def onboard(portal_dataset: str) -> Onboard:
    """Onboard a tenant through the service (its dataset included) and return the result."""

    def make(tenant_id: str | None = None, *, plan: str = "STARTER") -> OnboardingResult:
        return tenant_onboard(
            tenant_id=tenant_id or new_tenant_id(),
            company_name="Acme Analytics",
            admin_email="admin@acme.example",
            plan=plan,
            created_by="user:fixture",
        )

    return make


def url(name: str, *args: str) -> str:
    """The address of the portal page `admin:portal-<name>`."""
    return reverse(f"admin:portal-{name}", args=args)


def html(response: object) -> str:
    return response.content.decode()  # type: ignore[attr-defined]


def form_value(page: str, name: str) -> str:
    """The value the page's input `name` carries (a one-time token, say)."""
    match = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert match, f"no {name} field on the page"
    return match.group(1)


def messages_of(response: object) -> list[str]:
    return [str(message) for message in response.context["messages"]]  # type: ignore[attr-defined]
