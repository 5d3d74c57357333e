"""Admin and worker tokens served from the shared cache: no database on a hit, stale at once on a change."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from unittest import mock

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.cache import cache
from django.db import OperationalError, connection
from django.db.models import QuerySet
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tenants_app.models import AdminApiToken
from tenants_app.services.admin_tokens import (
    _note_use,
    _token_entry,
    admin_token_authenticate,
    admin_token_create,
    admin_token_revoke,
    token_hash,
    worker_token_authenticate,
    worker_token_create,
)

pytestmark = pytest.mark.django_db

START = datetime(2026, 12, 4, 9, 0, tzinfo=timezone.get_current_timezone())


@pytest.fixture
def workers() -> Group:
    return Group.objects.get_or_create(name=settings.PIPELINE_WORKERS_GROUP)[0]


@pytest.fixture
def worker(workers: Group) -> User:
    user = User.objects.create_user("worker-pool")
    user.groups.add(workers)
    return user


def queries(call: Callable[[], object], *, kind: str = "") -> int:
    """How many SQL statements `call` sent (those starting with `kind`, if given)."""
    with CaptureQueriesContext(connection) as captured:
        call()
    return sum(1 for query in captured.captured_queries if query["sql"].upper().startswith(kind))


def test_it_serves_a_verified_token_without_the_database(worker: User) -> None:
    plaintext = worker_token_create(user=worker, name="pool").plaintext
    assert worker_token_authenticate(plaintext=plaintext, now=START) is not None

    assert (
        queries(lambda: worker_token_authenticate(plaintext=plaintext, now=START + timedelta(seconds=1))) == 0
    )
    assert worker_token_authenticate(plaintext=plaintext, now=START + timedelta(seconds=1)) is not None


def test_it_refuses_a_cached_token_once_revoked(worker: User) -> None:
    issued = worker_token_create(user=worker, name="pool")
    assert worker_token_authenticate(plaintext=issued.plaintext, now=START) is not None

    admin_token_revoke(token_id=issued.token.pk)

    assert worker_token_authenticate(plaintext=issued.plaintext, now=START) is None


@pytest.mark.parametrize(
    "change",
    [
        "leave the group",
        "left all groups",
        "group cleared",
        "group renamed",
        "group deleted",
        "deactivated",
        "deleted",
    ],
)
def test_it_refuses_a_cached_worker_token_once_its_user_changes(
    worker: User, workers: Group, change: str
) -> None:
    plaintext = worker_token_create(user=worker, name="pool").plaintext
    assert worker_token_authenticate(plaintext=plaintext, now=START) is not None

    if change == "leave the group":
        worker.groups.remove(workers)
    elif change == "left all groups":
        worker.groups.clear()
    elif change == "deleted":
        worker.delete()
    elif change == "group cleared":
        workers.user_set.clear()
    elif change == "group renamed":
        workers.name = "former-workers"
        workers.save()
    elif change == "group deleted":
        workers.delete()
    else:
        worker.is_active = False
        worker.save()

    assert worker_token_authenticate(plaintext=plaintext, now=START) is None


def test_it_accepts_a_cached_token_again_once_its_user_rejoins_the_workers(
    worker: User, workers: Group
) -> None:
    plaintext = worker_token_create(user=worker, name="pool").plaintext
    worker.groups.remove(workers)
    assert worker_token_authenticate(plaintext=plaintext, now=START) is None  # cached as no worker

    workers.user_set.add(worker)

    assert worker_token_authenticate(plaintext=plaintext, now=START) is not None


def test_it_refuses_a_cached_admin_token_once_its_user_is_demoted() -> None:
    staff = User.objects.create_user("operator", is_staff=True)
    plaintext = admin_token_create(user=staff, name="ci").plaintext
    assert admin_token_authenticate(plaintext=plaintext, now=START) is not None

    staff.is_staff = False
    staff.save()

    assert admin_token_authenticate(plaintext=plaintext, now=START) is None


def test_it_checks_a_cached_tokens_expiry_on_every_call() -> None:
    staff = User.objects.create_user("operator", is_staff=True)
    issued = admin_token_create(user=staff, name="ci", expires_at=timezone.now() + timedelta(days=1))
    expires_at = issued.token.expires_at
    assert admin_token_authenticate(plaintext=issued.plaintext, now=expires_at - timedelta(seconds=1))

    assert admin_token_authenticate(plaintext=issued.plaintext, now=expires_at) is None


def test_it_sees_a_change_made_behind_djangos_back_after_token_cache_seconds(worker: User) -> None:
    plaintext = worker_token_create(user=worker, name="pool").plaintext
    assert worker_token_authenticate(plaintext=plaintext, now=START) is not None

    User.objects.filter(pk=worker.pk).update(is_active=False)  # no signal: nothing knows
    still = worker_token_authenticate(plaintext=plaintext, now=START + timedelta(seconds=1))
    later = START + timedelta(seconds=settings.TOKEN_CACHE_SECONDS + 1)

    assert still is not None
    assert worker_token_authenticate(plaintext=plaintext, now=later) is None


def test_it_writes_last_used_at_once_a_minute_from_the_cached_copy_too(worker: User) -> None:
    plaintext = worker_token_create(user=worker, name="pool").plaintext
    worker_token_authenticate(plaintext=plaintext, now=START)
    a_minute_on = START + timedelta(minutes=1)

    within = queries(
        lambda: worker_token_authenticate(plaintext=plaintext, now=START + timedelta(seconds=30))
    )
    worker_token_authenticate(plaintext=plaintext, now=a_minute_on)  # looked up again, and written
    after = queries(
        lambda: worker_token_authenticate(plaintext=plaintext, now=a_minute_on + timedelta(seconds=5))
    )

    assert (within, after) == (0, 0)
    assert AdminApiToken.objects.get().last_used_at == a_minute_on
    assert _token_entry(token_hash(plaintext), a_minute_on)["token"]["last_used_at"] == a_minute_on  # type: ignore[index]


def test_it_lets_one_of_the_calls_that_see_last_used_at_due_write_it(worker: User) -> None:
    plaintext = worker_token_create(user=worker, name="pool").plaintext
    worker_token_authenticate(plaintext=plaintext, now=START)
    # Calls in flight at once (threads, processes) each hold their own copy of the cached entry.
    copies = [_token_entry(token_hash(plaintext), START) for _ in range(3)]
    a_minute_on = START + timedelta(minutes=1)

    writes = queries(lambda: [_note_use(copy, a_minute_on) for copy in copies], kind="UPDATE")

    assert writes == 1
    assert AdminApiToken.objects.get().last_used_at == a_minute_on


def test_it_answers_when_last_used_at_cannot_be_written(
    worker: User, caplog: pytest.LogCaptureFixture
) -> None:
    plaintext = worker_token_create(user=worker, name="pool").plaintext
    worker_token_authenticate(plaintext=plaintext, now=START)
    locked = OperationalError("database is locked")

    with mock.patch.object(QuerySet, "update", side_effect=locked):
        token = worker_token_authenticate(plaintext=plaintext, now=START + timedelta(minutes=1))

    assert token is not None
    assert token.user == worker
    assert "last_used_at not written" in caplog.text


def test_it_keeps_no_password_hash_in_the_cache(workers: Group) -> None:
    user = User.objects.create_user("worker-pool", password="correct horse battery staple")
    user.groups.add(workers)
    plaintext = worker_token_create(user=user, name="pool").plaintext

    token = worker_token_authenticate(plaintext=plaintext, now=START)

    assert token is not None
    assert token.user.username == "worker-pool"
    stored = cache.get(f"cvg:token:v3:{token_hash(plaintext)}")
    assert stored is not None
    assert user.password not in repr(stored)
    assert plaintext not in repr(stored)
