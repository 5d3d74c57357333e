"""Shared fixtures: one real BigQuery emulator per test session, a fresh dataset per test."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from django.test import override_settings

from bigquery_backend.client import BigQueryGateway, get_gateway
from bigquery_backend.emulator import EmulatorProcess
from convergence.cache import embedded_cache
from tenants_app.services.api_key_verification import last_used_recorder
from tenants_app.services.bootstrap import bigquery_bootstrap
from tests.support.bigquery_realism import BigQueryRealismProxy, realism_proxy
from tests.support.kms_fake import FakeCloudKms, cloud_kms_in_use


@pytest.fixture(scope="session")
def bigquery_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    """A bqemulator on a free loopback port, in memory, for the whole session."""
    root: Path = tmp_path_factory.mktemp("bqemulator")
    emulator = EmulatorProcess(home=root / "home", log_path=root / "emulator.log")
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture(scope="session", autouse=True)
def _use_emulator(
    bigquery_emulator: EmulatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Point every test at the session's emulator, with short bounds so a failure fails fast."""
    data_dir = tmp_path_factory.mktemp("data")
    with override_settings(
        # Key files (local KMS, admin password) of tests never land in the repository's var/.
        DATA_DIR=data_dir,
        # The product's default cache, in this session's own directory: each xdist worker clears its own
        # between tests, never the other's (they would share the repository's var/cache otherwise).
        CACHES={"default": embedded_cache(data_dir / "cache")},
        BIGQUERY_EMULATOR_HOST=bigquery_emulator.url,
        BIGQUERY_PROJECT=bigquery_emulator.project,
        BIGQUERY_TIMEOUT_SECONDS=30.0,
        BIGQUERY_RETRY_DEADLINE_SECONDS=15.0,
        # Ticks back to back: a test's claims and reports one after another would each wait out the
        # spacing otherwise. Tests of the spacing set their own.
        PIPELINE_CLAIM_TICK_SECONDS=0.0,
        PIPELINE_REPORT_TICK_SECONDS=0.0,
    ):
        yield


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    """No key verification cached and no `last_used_at` pending from one test to the next."""
    cache.clear()
    last_used_recorder.reset()
    yield
    cache.clear()
    last_used_recorder.reset()


@pytest.fixture
def gateway() -> BigQueryGateway:
    return get_gateway()


@pytest.fixture
def realistic_bigquery(bigquery_emulator: EmulatorProcess) -> Iterator[Callable[..., BigQueryRealismProxy]]:
    """Starts a BigQuery realism proxy (tests/support/bigquery_realism.py) and points the app at it.

    `realistic_bigquery(scale=0.1, conflict_probability=0.2, ...)` takes `BigQueryRealismProxy`'s
    options; the app's gateway talks through it until the test ends.
    """
    with ExitStack() as stack:

        def start(**options: Any) -> BigQueryRealismProxy:
            proxy = stack.enter_context(realism_proxy(bigquery_emulator.url, **options))
            stack.enter_context(override_settings(BIGQUERY_EMULATOR_HOST=proxy.url))
            return proxy

        yield start


@pytest.fixture
def cloud_kms() -> Iterator[FakeCloudKms]:
    """KMS_BACKEND=gcp for one test: the real Cloud KMS client against a loopback fake, short bound."""
    with cloud_kms_in_use() as fake:
        yield fake


def unique_name(prefix: str) -> str:
    """A dataset name no other test uses, so tests never see each other's rows."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def dataset(gateway: BigQueryGateway) -> str:
    """An empty dataset of this test's own."""
    from google.cloud import bigquery

    name = unique_name("test")
    gateway.create_dataset(bigquery.Dataset(gateway.dataset_ref(name)))
    return name


@pytest.fixture
def central_dataset(settings: pytest.FixtureRequest) -> str:
    """A fresh, not yet bootstrapped name for the central dataset (setting TENANTS_DATASET)."""
    name = unique_name("tenants")
    settings.TENANTS_DATASET = name  # type: ignore[attr-defined]
    return name


@pytest.fixture(scope="module")
def central() -> Iterator[str]:
    """A bootstrapped central dataset shared by one module's tests (each test uses tenants of its own)."""
    name = unique_name("tenants")
    with override_settings(TENANTS_DATASET=name):
        bigquery_bootstrap()
        yield name
