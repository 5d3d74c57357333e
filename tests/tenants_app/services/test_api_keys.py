"""API keys against the emulator: issue, list, rotate, revoke, cached verification, batched last use."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from django.core.cache import cache
from django.test import override_settings
from django.utils import timezone
from pytest_django import Settings as SettingsWrapper

from bigquery_backend.client import BigQueryGateway
from bigquery_backend.emulator import EmulatorProcess
from tenants_app.kms import aad_for, get_kms
from tenants_app.models import TenantApiKey, TenantProfile, TenantStatus
from tenants_app.repositories import central_repository
from tenants_app.services.api_key_rotation import ROTATION_GRACE_PERIODS, api_key_rotate, rotated_key_name
from tenants_app.services.api_key_scopes import API_KEY_SCOPES, DEFAULT_API_KEY_SCOPES, INITIAL_API_KEY_SCOPES
from tenants_app.services.api_key_verification import (
    api_key_cache_invalidate,
    api_key_usage_flush,
    api_key_verify,
    last_used_recorder,
)
from tenants_app.services.api_keys import (
    NAME_MAX_LENGTH,
    IssuedApiKey,
    api_key_create,
    api_key_list,
    api_key_revoke,
)
from tenants_app.services.errors import (
    AlreadyExists,
    ApiKeyExpired,
    ApiKeyInvalid,
    ApiKeyRevoked,
    DoesNotExist,
    ServiceUnavailable,
    TenantSuspended,
    ValidationFailed,
)
from tenants_app.services.generations import cache_key as generations_key
from tenants_app.services.generations import key_subject
from tenants_app.services.tenants import tenant_suspend
from tenants_app.services.text_rules import bidi_reason
from tests.support.bigquery_proxy import Exchange, LoopbackProxy
from tests.support.kms_fake import FakeCloudKms
from tests.tenants_app.services.conftest import MakeTenant

KEY_PATTERN = re.compile(r"^cvg_live_[A-Za-z0-9]{40}$")
DML = ("INSERT", "UPDATE", "MERGE", "DELETE")


@pytest.fixture
def tenant(make_tenant: MakeTenant) -> str:
    return make_tenant()


def issue(tenant_id: str, **overrides: object) -> IssuedApiKey:
    arguments: dict[str, object] = {
        "tenant_id": tenant_id,
        "name": "CI deploys",
        "scopes": ["tenant:read", "pipelines:read"],
        "created_by": "ops@convergence.example",
        **overrides,
    }
    return api_key_create(**arguments)  # type: ignore[arg-type]


def stored(api_key_id: str) -> TenantApiKey:
    return central_repository(TenantApiKey).get(api_key_id)


def dml_in(statements: list[str]) -> list[str]:
    return [s for s in statements if s.lstrip().upper().startswith(DML)]


def assert_secret_absent(plaintext: str, text: str) -> None:
    random_part = plaintext.rsplit("_", 1)[1]
    assert plaintext not in text
    assert random_part not in text
    assert base64.b64encode(plaintext.encode()).decode() not in text


# --- issue and list ---------------------------------------------------------------------------------
def test_it_issues_a_key_once_and_stores_only_its_hash_prefix_and_encrypted_copy(tenant: str) -> None:
    issued = issue(tenant)

    row = stored(issued.row.api_key_id)
    assert KEY_PATTERN.fullmatch(issued.plaintext)
    assert row.api_key_hash == hashlib.sha256(issued.plaintext.encode()).hexdigest()
    assert row.key_prefix == issued.plaintext[: len("cvg_live_") + 6]
    assert issued.plaintext.encode() not in bytes(row.encrypted_api_key)
    aad = aad_for("tenant_api_keys", tenant, row.api_key_id)
    assert get_kms().decrypt(bytes(row.encrypted_api_key), aad=aad) == issued.plaintext.encode()
    assert (row.tenant_id, row.name, row.created_by) == (tenant, "CI deploys", "ops@convergence.example")
    assert row.scopes == ["tenant:read", "pipelines:read"]
    assert row.is_active is True
    assert row.expires_at is None


def test_it_issues_different_keys_every_time(tenant: str) -> None:
    first, second = issue(tenant), issue(tenant)

    assert first.plaintext != second.plaintext
    assert first.row.api_key_id != second.row.api_key_id


def test_it_issues_a_caller_chosen_key_id_only_once(tenant: str) -> None:
    issue(tenant, api_key_id=f"{tenant}_deploy")

    with pytest.raises(AlreadyExists):
        issue(tenant, api_key_id=f"{tenant}_deploy")

    assert central_repository(TenantApiKey).count(filters={"tenant_id": tenant}) == 1


def test_it_lists_keys_by_prefix_in_one_job_and_never_the_key(tenant: str, gateway: BigQueryGateway) -> None:
    kept, revoked = issue(tenant, name="kept"), issue(tenant, name="revoked")
    api_key_revoke(tenant_id=tenant, api_key_id=revoked.row.api_key_id, reason="leaked", revoked_by="ops")

    with gateway.count_jobs() as counter:
        active = api_key_list(tenant_id=tenant)
    everything = api_key_list(tenant_id=tenant, include_revoked=True)
    second = api_key_list(tenant_id=tenant, include_revoked=True, limit=1, offset=1)

    assert counter.jobs == 2  # the page and its total, however many keys pile up
    assert [row.api_key_id for row in active.items] == [kept.row.api_key_id]
    assert {row.api_key_id for row in everything.items} == {kept.row.api_key_id, revoked.row.api_key_id}
    assert (second.total, len(second.items)) == (2, 1)
    assert second.items[0].api_key_id == everything.items[1].api_key_id
    assert active.items[0].key_prefix == kept.plaintext[:15]
    for row in everything.items:
        # Neither the ciphertext nor the hash is read out of BigQuery.
        assert not row.encrypted_api_key
        assert not row.api_key_hash
        dump = repr(row) + str(row) + repr(vars(row))
        assert_secret_absent(kept.plaintext, dump)
        assert_secret_absent(revoked.plaintext, dump)


def test_it_validates_every_field_at_once(tenant: str, gateway: BigQueryGateway) -> None:
    with gateway.count_jobs() as counter, pytest.raises(ValidationFailed) as failure:
        api_key_create(
            tenant_id=tenant,
            name=" ",
            scopes=["tenant:read", "root"],
            created_by="",
            expires_at=timezone.now() - timedelta(seconds=1),
            api_key_id="bad id!",
        )

    assert set(failure.value.errors) == {"name", "scopes", "created_by", "expires_at", "api_key_id"}
    assert "root" in failure.value.errors["scopes"][0]
    assert counter.jobs == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "x" * 101),
        ("scopes", []),
        ("scopes", "tenant:read"),
        ("expires_at", timezone.now().replace(tzinfo=None) + timedelta(days=1)),
    ],
)
def test_it_refuses_a_bad_field(tenant: str, field: str, value: object) -> None:
    with pytest.raises(ValidationFailed) as failure:
        issue(tenant, **{field: value})

    assert list(failure.value.errors) == [field]


def test_it_keeps_scopes_in_catalogue_order_without_duplicates(tenant: str) -> None:
    issued = issue(tenant, scopes=["pipelines:execute", "tenant:read", "tenant:read"])

    assert stored(issued.row.api_key_id).scopes == ["tenant:read", "pipelines:execute"]


def test_it_defaults_new_keys_to_the_read_only_scopes_and_the_initial_key_to_all_but_running() -> None:
    assert DEFAULT_API_KEY_SCOPES == ("tenant:read", "pipelines:read")
    assert set(INITIAL_API_KEY_SCOPES) == set(API_KEY_SCOPES) - {"pipelines:execute"}


def test_it_issues_keys_only_for_existing_open_tenants(make_tenant: MakeTenant) -> None:
    cancelled = make_tenant(TenantStatus.CANCELLED)

    with pytest.raises(DoesNotExist):
        issue("nobody_here")
    with pytest.raises(ValidationFailed, match="cancelled"):
        issue(cancelled)

    assert central_repository(TenantApiKey).count(filters={"tenant_id": cancelled}) == 0


# --- verification -----------------------------------------------------------------------------------
def test_it_finds_the_key_by_its_hash_then_serves_it_from_the_cache_with_zero_jobs(
    tenant: str, gateway: BigQueryGateway
) -> None:
    issued = issue(tenant)

    with gateway.count_jobs() as miss:
        first = api_key_verify(key=issued.plaintext)
    with gateway.count_jobs() as hits:
        again = [api_key_verify(key=issued.plaintext) for _ in range(20)]

    assert (first.tenant_id, first.api_key_id) == (tenant, issued.row.api_key_id)
    assert first.scopes == ("tenant:read", "pipelines:read")
    assert first.has_scope("pipelines:read")
    assert not first.has_scope("keys:manage")
    assert miss.jobs == 2  # the key by hash, then its tenant's status
    assert "`api_key_hash` = @p0" in miss.statements[0]
    assert (hits.jobs, hits.api_calls) == (0, 0)
    assert set(again) == {first}


@pytest.mark.parametrize(
    "key",
    [
        "",
        "cvg_live_short",
        "cvg_live_" + "a" * 39 + "!",
        "cvg_live_" + "a" * 41,
        "xyz_live_" + "a" * 40,
        "cvg_test_" + "a" * 40,  # another environment's key
        "cvg_live_" + "a" * 40 + "\n",
        "cvg_live_" + "a" * 4000,
        None,
        b"cvg_live_" + b"a" * 40,
    ],
)
def test_it_refuses_a_malformed_key_without_any_job(key: object, gateway: BigQueryGateway) -> None:
    with gateway.count_jobs() as counter, pytest.raises(ApiKeyInvalid) as failure:
        api_key_verify(key=key)  # type: ignore[arg-type]

    assert (counter.jobs, counter.api_calls) == (0, 0)
    assert failure.value.status == 401


def test_it_caches_an_unknown_key_as_unknown_by_its_hash(central: str, gateway: BigQueryGateway) -> None:
    bogus = "cvg_live_" + "Z" * 40

    with gateway.count_jobs() as first, pytest.raises(ApiKeyInvalid):
        api_key_verify(key=bogus)
    with gateway.count_jobs() as second, pytest.raises(ApiKeyInvalid):
        api_key_verify(key=bogus)

    assert (first.jobs, second.jobs) == (1, 0)
    keys = list(cache._cache)  # type: ignore[attr-defined]  # locmem: the stored keys
    assert any(hashlib.sha256(bogus.encode()).hexdigest() in key for key in keys)
    assert not any("Z" * 40 in key for key in keys)


def test_it_forgets_an_unknown_key_after_the_negative_ttl(
    central: str, gateway: BigQueryGateway, settings: SettingsWrapper
) -> None:
    settings.API_KEY_NEGATIVE_CACHE_SECONDS = 10
    bogus = "cvg_live_" + "Y" * 40
    start = timezone.now()
    with pytest.raises(ApiKeyInvalid):
        api_key_verify(key=bogus, now=start)

    with gateway.count_jobs() as within, pytest.raises(ApiKeyInvalid):
        api_key_verify(key=bogus, now=start + timedelta(seconds=9.9))
    with gateway.count_jobs() as after, pytest.raises(ApiKeyInvalid):
        api_key_verify(key=bogus, now=start + timedelta(seconds=10))

    assert (within.jobs, after.jobs) == (0, 1)


def test_it_keeps_the_key_out_of_cached_values(tenant: str) -> None:
    issued = issue(tenant)

    api_key_verify(key=issued.plaintext)

    # What any local tool reading the cache's files would see: every byte the cache wrote to disk.
    directory = Path(cache.directory)  # type: ignore[attr-defined]  # diskcache.DjangoCache
    stored = b"".join(path.read_bytes() for path in directory.rglob("*") if path.is_file())
    assert issued.row.api_key_id.encode() in stored  # the entry is there...
    assert issued.plaintext.encode() not in stored  # ...without the key


def test_it_refuses_an_expired_key_even_from_the_cache(tenant: str, gateway: BigQueryGateway) -> None:
    # Well inside API_KEY_CACHE_SECONDS (60): the entry cached now is still fresh at the expiry.
    expires_at = timezone.now() + timedelta(seconds=30)
    issued = issue(tenant, expires_at=expires_at)
    api_key_verify(key=issued.plaintext)

    with gateway.count_jobs() as counter:
        last = api_key_verify(key=issued.plaintext, now=expires_at - timedelta(microseconds=1))
        with pytest.raises(ApiKeyExpired) as failure:
            api_key_verify(key=issued.plaintext, now=expires_at)

    assert last.api_key_id == issued.row.api_key_id
    assert counter.jobs == 0
    assert failure.value.status == 401


def test_it_refuses_keys_of_a_suspended_tenant_once_the_cache_entry_is_gone(
    make_tenant: MakeTenant, gateway: BigQueryGateway
) -> None:
    tenant = make_tenant()
    issued = issue(tenant)
    api_key_verify(key=issued.plaintext)
    central_repository(TenantProfile).update(tenant, {"status": TenantStatus.SUSPENDED})

    # Changed behind the services' back: until the entry expires (API_KEY_CACHE_SECONDS) it stands.
    assert api_key_verify(key=issued.plaintext).tenant_id == tenant
    with gateway.count_jobs() as counter:
        api_key_cache_invalidate(tenant_id=tenant)
    assert counter.jobs == 0
    with pytest.raises(TenantSuspended) as failure:
        api_key_verify(key=issued.plaintext)
    cache.clear()
    with pytest.raises(TenantSuspended):
        api_key_verify(key=issued.plaintext)

    assert failure.value.status == 403
    assert "suspended" in failure.value.message


class ProfileReadGate(LoopbackProxy):
    """Relays everything, but holds the answer to the first read of a tenant profile until opened: the
    read itself has run, so its reader goes on with what was true before."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.reached, self.opened = threading.Event(), threading.Event()

    def handle(self, exchange: Exchange) -> None:
        statement = exchange.statement
        if statement.startswith("SELECT") and "tenant_profiles" in statement and not self.reached.is_set():
            answer = exchange.forward()
            self.reached.set()
            self.opened.wait(60)
            exchange.answer(*answer)
            return
        exchange.relay()


@pytest.mark.parametrize("change", ["revoke", "suspend"])
def test_it_never_caches_a_verification_that_read_bigquery_before_a_revocation_or_suspension(
    tenant: str, bigquery_emulator: EmulatorProcess, change: str
) -> None:
    issued = issue(tenant)
    gate = ProfileReadGate(bigquery_emulator.url).start()
    verifying = ThreadPoolExecutor(max_workers=1)
    try:
        with override_settings(BIGQUERY_EMULATOR_HOST=gate.url):
            # This verification has read the key row and the profile (active), not yet cached them...
            started = verifying.submit(api_key_verify, key=issued.plaintext)
            assert gate.reached.wait(60)
            # ...while the key is revoked or the tenant suspended; then it caches what it read.
            if change == "revoke":
                api_key_revoke(
                    tenant_id=tenant, api_key_id=issued.row.api_key_id, reason="leak", revoked_by="t"
                )
            else:
                tenant_suspend(tenant_id=tenant, actor="user:root")
            gate.opened.set()
            started.result(timeout=60)  # it began before the change: whatever it answered stands
            refused = ApiKeyRevoked if change == "revoke" else TenantSuspended
            with pytest.raises(refused):
                api_key_verify(key=issued.plaintext)
    finally:
        gate.opened.set()
        verifying.shutdown()
        gate.stop()


# --- revoke -----------------------------------------------------------------------------------------
def test_it_revokes_a_cached_key_at_once(tenant: str, gateway: BigQueryGateway) -> None:
    issued = issue(tenant)
    api_key_verify(key=issued.plaintext)

    revoked = api_key_revoke(
        tenant_id=tenant, api_key_id=issued.row.api_key_id, reason="laptop stolen", revoked_by="ops"
    )

    with pytest.raises(ApiKeyRevoked) as failure:
        api_key_verify(key=issued.plaintext)
    row = stored(issued.row.api_key_id)
    assert failure.value.status == 401
    assert (row.is_active, row.revoked_reason, row.revoked_by) == (False, "laptop stolen", "ops")
    assert row.revoked_at is not None
    assert revoked.revoked_reason == "laptop stolen"
    assert revoked.encrypted_api_key is None, "the ciphertext never leaves the service"
    with gateway.count_jobs() as counter, pytest.raises(ApiKeyRevoked):
        api_key_verify(key=issued.plaintext)
    assert counter.jobs == 0, "a revoked key is cached as revoked, not looked up again"


@pytest.mark.parametrize("reason", ["", "   ", "x" * 501, None])
def test_it_requires_a_reason_to_revoke(tenant: str, reason: object) -> None:
    issued = issue(tenant)

    with pytest.raises(ValidationFailed) as failure:
        api_key_revoke(
            tenant_id=tenant,
            api_key_id=issued.row.api_key_id,
            reason=reason,  # type: ignore[arg-type]
            revoked_by="ops",
        )

    assert list(failure.value.errors) == ["reason"]
    assert api_key_verify(key=issued.plaintext).api_key_id == issued.row.api_key_id


def test_it_keeps_the_first_reason_when_a_key_is_revoked_twice(tenant: str) -> None:
    issued = issue(tenant)
    api_key_revoke(tenant_id=tenant, api_key_id=issued.row.api_key_id, reason="first", revoked_by="a")

    again = api_key_revoke(
        tenant_id=tenant, api_key_id=issued.row.api_key_id, reason="second", revoked_by="b"
    )

    assert (again.revoked_reason, again.revoked_by) == ("first", "a")
    assert stored(issued.row.api_key_id).revoked_reason == "first"


def test_it_answers_another_tenants_key_as_missing(make_tenant: MakeTenant) -> None:
    owner, intruder = make_tenant(), make_tenant()
    issued = issue(owner)

    with pytest.raises(DoesNotExist):
        api_key_revoke(tenant_id=intruder, api_key_id=issued.row.api_key_id, reason="x", revoked_by="x")
    with pytest.raises(DoesNotExist):
        api_key_rotate(
            tenant_id=intruder, api_key_id=issued.row.api_key_id, grace=timedelta(0), rotated_by="x"
        )

    assert api_key_verify(key=issued.plaintext).tenant_id == owner
    assert central_repository(TenantApiKey).count(filters={"tenant_id": intruder}) == 0


# --- rotate -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("grace", [g for g in ROTATION_GRACE_PERIODS if g], ids=["1h", "24h", "7d"])
def test_it_rotates_with_a_grace_period_during_which_both_keys_work(tenant: str, grace: timedelta) -> None:
    old = issue(tenant, scopes=["tenant:read", "keys:manage"])
    api_key_verify(key=old.plaintext)
    before = timezone.now()

    new = api_key_rotate(tenant_id=tenant, api_key_id=old.row.api_key_id, grace=grace, rotated_by="ops")

    assert api_key_verify(key=old.plaintext).api_key_id == old.row.api_key_id
    assert api_key_verify(key=new.plaintext).api_key_id == new.row.api_key_id
    old_row, new_row = stored(old.row.api_key_id), stored(new.row.api_key_id)
    assert old_row.replaced_by_key_id == new.row.api_key_id
    assert before + grace <= old_row.expires_at <= timezone.now() + grace
    assert old_row.is_active is True
    assert (new_row.scopes, new_row.created_by) == (old_row.scopes, "ops")
    assert new_row.name.startswith("CI deploys (rotated ")
    assert new.plaintext != old.plaintext


def test_it_rotates_without_grace_and_the_old_key_fails_at_once(tenant: str) -> None:
    old = issue(tenant)
    api_key_verify(key=old.plaintext)

    new = api_key_rotate(
        tenant_id=tenant, api_key_id=old.row.api_key_id, grace=timedelta(0), rotated_by="ops"
    )

    with pytest.raises(ApiKeyRevoked):
        api_key_verify(key=old.plaintext)
    assert api_key_verify(key=new.plaintext).tenant_id == tenant
    old_row = stored(old.row.api_key_id)
    assert (old_row.is_active, old_row.replaced_by_key_id) == (False, new.row.api_key_id)


def test_it_ends_the_grace_period_of_a_rotated_key(tenant: str) -> None:
    old = issue(tenant)
    api_key_rotate(tenant_id=tenant, api_key_id=old.row.api_key_id, grace=timedelta(hours=1), rotated_by="o")
    central_repository(TenantApiKey).update(
        old.row.api_key_id, {"expires_at": timezone.now() - timedelta(seconds=1)}
    )
    cache.clear()

    with pytest.raises(ApiKeyExpired):
        api_key_verify(key=old.plaintext)


def utc_today() -> str:
    return timezone.now().astimezone(UTC).date().isoformat()


def rotate_for_an_hour(tenant: str, key: IssuedApiKey, *, resume: bool | None = None) -> IssuedApiKey:
    return api_key_rotate(
        tenant_id=tenant,
        api_key_id=key.row.api_key_id,
        grace=timedelta(hours=1),
        rotated_by="ops",
        resume=resume,
    )


def test_it_names_a_replacement_after_its_predecessor_once_however_often_it_is_rotated(tenant: str) -> None:
    first = issue(tenant, name="Initial key")
    day = utc_today()

    second = rotate_for_an_hour(tenant, first)
    third = rotate_for_an_hour(tenant, second)
    # The retry of a rotation whose answer was lost shows the replacement it made, name and all.
    retried = rotate_for_an_hour(tenant, second, resume=True)

    names = {f"Initial key (rotated {date})" for date in (day, utc_today())}  # two across midnight
    assert stored(first.row.api_key_id).name == "Initial key"
    assert stored(second.row.api_key_id).name in names
    assert stored(third.row.api_key_id).name in names
    assert (retried.row.api_key_id, retried.row.name) == (third.row.api_key_id, third.row.name)


def test_it_replaces_an_earlier_rotation_date_instead_of_adding_one() -> None:
    rotated_on = datetime(2026, 12, 3, 16, 30, tzinfo=UTC)
    # 23:30 in New York on 3 December is 4 December in UTC.
    late_in_new_york = datetime(2026, 12, 4, 4, 30, tzinfo=UTC).astimezone(ZoneInfo("America/New_York"))

    assert rotated_key_name(name="CI deploys", rotated_at=rotated_on) == "CI deploys (rotated 2026-12-03)"
    assert (
        rotated_key_name(name="CI deploys (rotated 2026-11-30)", rotated_at=rotated_on)
        == "CI deploys (rotated 2026-12-03)"
    )
    assert rotated_key_name(name="CI (rotated 2026-12-03)", rotated_at=late_in_new_york) == (
        "CI (rotated 2026-12-04)"
    )
    assert rotated_key_name(name=None, rotated_at=rotated_on) == "API key (rotated 2026-12-03)"


def test_it_leaves_the_bidi_controls_of_a_legacy_name_out_of_its_replacement(tenant: str) -> None:
    old = issue(tenant)
    # Stored before names were checked for bidi controls: issuing refuses this name now.
    central_repository(TenantApiKey).update(old.row.api_key_id, {"name": "Deploy\u202e key\u2066"})

    new = api_key_rotate(
        tenant_id=tenant, api_key_id=old.row.api_key_id, grace=timedelta(hours=1), rotated_by="ops"
    )

    assert stored(new.row.api_key_id).name == f"Deploy key (rotated {utc_today()})"
    assert bidi_reason(stored(new.row.api_key_id).name) is None
    assert stored(old.row.api_key_id).name == "Deploy\u202e key\u2066"
    rotated_on = datetime(2026, 12, 3, tzinfo=UTC)
    assert rotated_key_name(name="\u202e \u200f", rotated_at=rotated_on) == "API key (rotated 2026-12-03)"
    assert rotated_key_name(name="CI (rotated 2026-11-30)\u202c", rotated_at=rotated_on) == (
        "CI (rotated 2026-12-03)"
    )


def test_it_cuts_a_long_name_so_that_the_rotation_date_fits(tenant: str) -> None:
    long_name = "n" * NAME_MAX_LENGTH
    old = issue(tenant, name=long_name)

    new = api_key_rotate(
        tenant_id=tenant, api_key_id=old.row.api_key_id, grace=timedelta(0), rotated_by="ops"
    )

    name = stored(new.row.api_key_id).name
    assert len(name) == NAME_MAX_LENGTH
    assert re.fullmatch(r"n+ \(rotated \d{4}-\d{2}-\d{2}\)", name)
    again = rotated_key_name(name=name, rotated_at=datetime(2027, 1, 1, tzinfo=UTC))
    assert again == "n" * (NAME_MAX_LENGTH - 21) + " (rotated 2027-01-01)"


@pytest.mark.parametrize("grace", [timedelta(hours=2), timedelta(seconds=-1), 3600, None])
def test_it_refuses_a_grace_period_outside_the_catalogue(tenant: str, grace: object) -> None:
    old = issue(tenant)

    with pytest.raises(ValidationFailed) as failure:
        api_key_rotate(tenant_id=tenant, api_key_id=old.row.api_key_id, grace=grace, rotated_by="o")  # type: ignore[arg-type]

    assert list(failure.value.errors) == ["grace"]
    assert central_repository(TenantApiKey).count(filters={"tenant_id": tenant}) == 1


def test_it_refuses_to_rotate_a_rotated_or_revoked_key(tenant: str) -> None:
    rotated, revoked = issue(tenant), issue(tenant)
    api_key_rotate(
        tenant_id=tenant, api_key_id=rotated.row.api_key_id, grace=timedelta(hours=1), rotated_by="o"
    )
    api_key_revoke(tenant_id=tenant, api_key_id=revoked.row.api_key_id, reason="gone", revoked_by="o")

    with pytest.raises(ValidationFailed, match="already rotated"):
        api_key_rotate(
            tenant_id=tenant, api_key_id=rotated.row.api_key_id, grace=timedelta(0), rotated_by="o"
        )
    with pytest.raises(ValidationFailed, match="revoked"):
        api_key_rotate(
            tenant_id=tenant, api_key_id=revoked.row.api_key_id, grace=timedelta(0), rotated_by="o"
        )

    assert central_repository(TenantApiKey).count(filters={"tenant_id": tenant}) == 3


# --- last_used_at -----------------------------------------------------------------------------------
def test_it_records_last_use_of_many_verifications_with_one_dml(
    tenant: str, gateway: BigQueryGateway, settings: SettingsWrapper
) -> None:
    settings.API_KEY_LAST_USED_FLUSH_SECONDS = 3600
    keys = [issue(tenant) for _ in range(3)]

    with gateway.count_jobs() as verifying:
        for n in range(100):
            api_key_verify(key=keys[n % 3].plaintext)
    with gateway.count_jobs() as flushing:
        flushed = api_key_usage_flush()

    assert dml_in(verifying.statements) == []
    assert verifying.jobs == 6  # two per key, on its first verification only
    assert flushed == 3
    assert len(dml_in(flushing.statements)) == flushing.jobs == 1
    assert all(stored(key.row.api_key_id).last_used_at is not None for key in keys)
    assert api_key_usage_flush() == 0


class SteppedClock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self) -> float:
        return self.seconds

    def advance(self, seconds: float) -> None:
        self.seconds += seconds


@pytest.fixture
def recorder_clock(monkeypatch: pytest.MonkeyPatch) -> SteppedClock:
    """The clock of the `last_used_at` flush interval, moved by the test instead of slept through."""
    clock = SteppedClock()
    monkeypatch.setattr(last_used_recorder, "clock", clock)
    last_used_recorder.reset()  # the interval starts on this clock
    return clock


def test_it_flushes_last_use_from_verify_once_the_interval_has_elapsed(
    tenant: str, gateway: BigQueryGateway, settings: SettingsWrapper, recorder_clock: SteppedClock
) -> None:
    settings.API_KEY_LAST_USED_FLUSH_SECONDS = 60
    issued = issue(tenant)
    api_key_verify(key=issued.plaintext)

    recorder_clock.advance(59.9)
    with gateway.count_jobs() as early:
        api_key_verify(key=issued.plaintext)
    recorder_clock.advance(0.1)
    with gateway.count_jobs() as due:
        api_key_verify(key=issued.plaintext)

    assert early.jobs == 0
    assert len(dml_in(due.statements)) == due.jobs == 1
    assert stored(issued.row.api_key_id).last_used_at is not None


# --- KMS and secrecy --------------------------------------------------------------------------------
def test_it_issues_nothing_when_kms_is_down(tenant: str, cloud_kms: FakeCloudKms) -> None:
    cloud_kms.simulate_outage()

    with pytest.raises(ServiceUnavailable) as failure:
        issue(tenant)

    assert failure.value.status == 503
    assert cloud_kms.calls["encrypt"] >= 1
    assert central_repository(TenantApiKey).count(filters={"tenant_id": tenant}) == 0


def test_it_rotates_nothing_when_kms_is_down(tenant: str, cloud_kms: FakeCloudKms) -> None:
    old = issue(tenant)
    cloud_kms.simulate_outage()

    with pytest.raises(ServiceUnavailable):
        api_key_rotate(tenant_id=tenant, api_key_id=old.row.api_key_id, grace=timedelta(0), rotated_by="o")

    assert central_repository(TenantApiKey).count(filters={"tenant_id": tenant}) == 1
    assert api_key_verify(key=old.plaintext).api_key_id == old.row.api_key_id


@pytest.mark.parametrize("backend", ["local", "gcp"])
def test_it_never_logs_or_shows_the_key(
    tenant: str, backend: str, caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest
) -> None:
    if backend == "gcp":
        request.getfixturevalue("cloud_kms")
    caplog.set_level(logging.DEBUG)

    issued = issue(tenant)
    api_key_verify(key=issued.plaintext)
    rotated = api_key_rotate(
        tenant_id=tenant, api_key_id=issued.row.api_key_id, grace=timedelta(hours=1), rotated_by="o"
    )
    api_key_verify(key=rotated.plaintext)
    api_key_revoke(tenant_id=tenant, api_key_id=rotated.row.api_key_id, reason="test", revoked_by="o")
    with pytest.raises(ApiKeyRevoked) as revoked:
        api_key_verify(key=rotated.plaintext)
    api_key_usage_flush()

    assert "issued for tenant" in caplog.text, "the capture must see this module's records"
    for key in (issued, rotated):
        assert_secret_absent(key.plaintext, caplog.text)
        assert_secret_absent(key.plaintext, repr(key) + str(key) + repr(key.row) + str(key.row))
        assert_secret_absent(key.plaintext, str(revoked.value) + repr(revoked.value))


def test_it_never_trusts_a_cached_verification_whose_generation_was_evicted(
    tenant: str, gateway: BigQueryGateway
) -> None:
    issued = issue(tenant)
    api_key_verify(key=issued.plaintext)
    # A full cache (or Redis under memory pressure) evicts the key's generation: it must not come back
    # as a value the entry was stored under, or a revocation before the eviction would be undone.
    cache.delete(generations_key(key_subject(issued.row.api_key_hash)))

    with gateway.count_jobs() as counter:
        api_key_verify(key=issued.plaintext)

    assert counter.jobs == 2  # looked up again: key row and tenant profile
