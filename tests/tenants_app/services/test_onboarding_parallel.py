"""Onboarding's independent calls are in flight together, its dependent ones in order (no timing asserted)."""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from django.test import override_settings

from bigquery_backend.emulator import EmulatorProcess
from tenants_app.services.onboarding import ONBOARDING_STEPS, OnboardingResult, tenant_onboard
from tests.support.bigquery_proxy import Exchange, LoopbackProxy
from tests.tenants_app.services.test_onboarding import (
    COMPLETE,
    READER_TEMPLATE,
    TABLE_NAMES,
    VIEW_NAMES,
    Footprint,
    InjectedFailure,
    fail_before,
    footprint,
)

DML_WORDS = ("INSERT", "UPDATE", "MERGE", "DELETE")
# Only a guard against a hang: a held request goes on after this even if its group never fills up.
PATIENCE = 5.0


@pytest.fixture(scope="module", autouse=True)
def _reader_principal() -> Iterator[None]:
    with override_settings(TENANT_READER_PRINCIPAL_TEMPLATE=READER_TEMPLATE):
        yield


@dataclass(frozen=True)
class Group:
    """Requests that may all be in flight at once, and how many of them one onboarding makes."""

    matches: Callable[[Exchange], bool]
    size: int


class Rendezvous(LoopbackProxy):
    """Holds each request of a group until the whole group has arrived (or PATIENCE passes).

    A run that sends a group's requests side by side fills the group at once and every one of them is
    in flight together; a run that sends them one after another never has two in flight. Also keeps,
    for every write, when it started and ended (in one sequence of events).
    """

    def __init__(self, upstream: str, groups: dict[str, Group]) -> None:
        super().__init__(upstream)
        self.groups = groups
        self.arrived: Counter[str] = Counter()
        self.in_flight: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.events: list[tuple[str, str]] = []
        self._changed = threading.Condition()

    def handle(self, exchange: Exchange) -> None:
        group = next((name for name, g in self.groups.items() if g.matches(exchange)), None)
        write = what_it_writes(exchange)
        with self._changed:
            if write:
                self.events.append(("start", write))
            if group is not None:
                self.arrived[group] += 1
                self.in_flight[group] += 1
                self.peak[group] = max(self.peak[group], self.in_flight[group])
                self._changed.notify_all()
                self._changed.wait_for(lambda: self.arrived[group] >= self.groups[group].size, PATIENCE)
        try:
            exchange.relay()
        finally:
            with self._changed:
                if group is not None:
                    self.in_flight[group] -= 1
                if write:
                    self.events.append(("end", write))

    def index(self, event: str, write: str) -> int:
        return self.events.index((event, write))


def what_it_writes(exchange: Exchange) -> str:
    """`MERGE tenant_profiles`, `POST tables tenant_step_logs`, `PATCH datasets/<id>`...; '' for a read."""
    statement = exchange.statement
    if statement:
        words = statement.replace("`", " ").split()
        table = next((word.rsplit(".", 1)[-1] for word in words if word.count(".") == 2), "")
        return f"{words[0].upper()} {table}" if words[0].upper() in DML_WORDS else ""
    if exchange.method not in ("POST", "PATCH", "PUT", "DELETE") or "/queries" in exchange.path:
        return ""
    path = exchange.path.split("?")[0]
    if path.endswith("/tables"):
        return f"POST tables {json.loads(exchange.body)['tableReference']['tableId']}"
    if path.endswith("/datasets"):
        return "POST datasets"
    return f"{exchange.method} datasets/{path.rsplit('/', 1)[-1]}"


def merges_into(*tables: str) -> Callable[[Exchange], bool]:
    return lambda exchange: (
        exchange.statement.startswith("MERGE") and any(f".{table}`" in exchange.statement for table in tables)
    )


def creates(tenant_id: str, *, views: bool) -> Callable[[Exchange], bool]:
    def matches(exchange: Exchange) -> bool:
        if exchange.method != "POST" or not exchange.path.split("?")[0].endswith(f"/{tenant_id}/tables"):
            return False
        return ("view" in json.loads(exchange.body)) is views

    return matches


def creates_dataset(exchange: Exchange) -> bool:
    return exchange.method == "POST" and exchange.path.split("?")[0].endswith("/datasets")


def grants_on(dataset_id: str) -> Callable[[Exchange], bool]:
    return lambda exchange: (
        exchange.method == "PATCH" and exchange.path.split("?")[0].endswith(f"/datasets/{dataset_id}")
    )


def onboard(tenant_id: str, **options: object) -> OnboardingResult:
    return tenant_onboard(
        tenant_id=tenant_id,
        company_name="Acme Corp",
        admin_email="admin@acme.example",
        plan="STARTER",
        created_by="ops@convergence.example",
        **options,  # type: ignore[arg-type]
    )


def test_it_sends_independent_creations_side_by_side_and_dependent_ones_in_order(
    central: str, bigquery_emulator: EmulatorProcess
) -> None:
    tenant_id = f"acme_{uuid.uuid4().hex[:12]}"
    groups = {
        # After the profile: both rows and the dataset.
        "rows_and_dataset": Group(
            lambda e: merges_into("tenant_subscriptions", "tenant_usage_quotas")(e) or creates_dataset(e), 3
        ),
        "tables": Group(creates(tenant_id, views=False), len(TABLE_NAMES)),
        # After the dataset: the views, and the readers' grant on it.
        "views_and_grant": Group(lambda e: creates(tenant_id, views=True)(e) or grants_on(tenant_id)(e), 3),
    }
    proxy = Rendezvous(bigquery_emulator.url, groups).start()
    try:
        with override_settings(BIGQUERY_EMULATOR_HOST=proxy.url):
            result = onboard(tenant_id)
    finally:
        proxy.stop()

    assert result.performed == list(ONBOARDING_STEPS)
    assert footprint(tenant_id, central) == COMPLETE
    assert dict(proxy.peak) == {name: group.size for name, group in groups.items()}
    # The profile is written before anything else; the key after everything but its audit entry.
    writes = {write for _, write in proxy.events}
    profile_done = proxy.index("end", "MERGE tenant_profiles")
    key_started = proxy.index("start", "MERGE tenant_api_keys")
    for write in writes - {"MERGE tenant_profiles"}:
        assert proxy.index("start", write) > profile_done, write
    for write in writes - {"MERGE tenant_api_keys", "INSERT audit_log"}:
        assert proxy.index("end", write) < key_started, write
    assert {f"POST tables {name}" for name in TABLE_NAMES + VIEW_NAMES} <= writes


def test_it_lets_the_other_steps_finish_when_one_fails_and_a_repeat_does_the_rest(central: str) -> None:
    tenant_id = f"acme_{uuid.uuid4().hex[:12]}"

    with pytest.raises(InjectedFailure):
        onboard(tenant_id, before_step=fail_before("usage"))
    left = footprint(tenant_id, central)
    result = onboard(tenant_id)

    # Everything but the usage row and the key (which comes after it) was done before the failure
    # was raised: nothing was still running, so the state a repeat finds does not depend on timing.
    tables = tuple(sorted(TABLE_NAMES + VIEW_NAMES))
    assert left == Footprint(1, 1, 0, 0, tables, 2, 1)
    assert result.performed == ["usage", "api_key"]
    assert footprint(tenant_id, central) == COMPLETE
