"""Browser test fixtures: Debian's chromium driven by Playwright against a live server on loopback.

One live server and one browser serve the whole package; each test gets a fresh browser context (no
cookies shared) and fresh Django users, because pytest-django flushes Django's tables after every
live-server test. BigQuery data lives in one bootstrapped central dataset for the package, so tests
use tenant ids of their own.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client, override_settings
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
from pytest_django import DjangoDbBlocker
from pytest_django.live_server_helper import LiveServer

from tenants_app.services.bootstrap import bigquery_bootstrap
from tenants_app.services.onboarding import OnboardingResult, tenant_onboard
from tests.conftest import unique_name
from tests.support.people import create_read_only_staff, create_superuser

CHROMIUM = "/usr/bin/chromium"
# Headless in a container: no setuid sandbox as root, no GPU, /dev/shm is small, and no calls home
# (tests use loopback only).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
]
SCREENSHOTS = Path(settings.BASE_DIR) / "artifacts" / "screenshots"
PASSWORD = "browser-test-password"  # a throwaway user of the test database
# Every wait is Playwright's own (for a selector, a URL, a load state); this only bounds them. Portal
# pages read BigQuery, which the emulator answers in a few seconds at worst on a busy CI machine.
TIMEOUT_MS = 30_000

Login = Callable[[Page, User], None]
Screenshot = Callable[[Page, str], Path]
Onboard = Callable[..., OnboardingResult]
# The widths pages are checked at: a laptop's and a phone's, each with its device's height.
LAPTOP, PHONE = 1366, 390


def set_width(page: Page, width: int) -> None:
    page.set_viewport_size({"width": width, "height": 844 if width == PHONE else 768})


def assert_fits(page: Page, width: int) -> None:
    """Nothing on the page makes it scroll sideways."""
    assert page.evaluate("document.documentElement.scrollWidth") <= width


@pytest.fixture(scope="package")
def live_server(django_db_setup: None, django_db_blocker: DjangoDbBlocker) -> Iterator[LiveServer]:
    """pytest-django's live server, bound to 127.0.0.1 on a free port (its default is `localhost`)."""
    with django_db_blocker.unblock():
        server = LiveServer("127.0.0.1:0")
    yield server
    server.stop()


@pytest.fixture(scope="package", autouse=True)
def browser_central() -> Iterator[str]:
    """One bootstrapped central dataset for the package, seen by the live server's thread too."""
    name = unique_name("tenants")
    # Django's fastest hasher: every test creates its users again (the flush removes them) and logs in.
    with override_settings(
        TENANTS_DATASET=name, PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]
    ):
        bigquery_bootstrap()
        yield name


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """One headless chromium for the package."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run `bash scripts/ensure-chromium.sh` (as root) or `make test`")
    # Playwright's sync API keeps an asyncio loop running in this thread while it is started, and
    # Django refuses ORM calls (creating users, pytest-django's flush after each test) from a thread
    # with a running loop. Nothing here is asynchronous, so the guard is lifted, only while the browser
    # lives: stopping Playwright stops its loop, and the tests after this package run guarded again.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
    finally:
        playwright.stop()
        if previous is None:
            del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def context(browser: Browser, live_server: LiveServer) -> Iterator[BrowserContext]:
    """A fresh browser profile per test, with relative URLs resolved against the live server."""
    browser_context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    browser_context.set_default_timeout(TIMEOUT_MS)
    yield browser_context
    browser_context.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


@pytest.fixture
def superuser(transactional_db: None) -> User:
    return create_superuser(PASSWORD)


@pytest.fixture
def read_only_staff(transactional_db: None) -> User:
    return create_read_only_staff(PASSWORD)


@pytest.fixture
def login(live_server: LiveServer) -> Login:
    """Log `user` in without a page load: a session made by Django's test client, set as a cookie.

    The login form itself is tested once, in test_login.py.
    """

    def log_in(page: Page, user: User) -> None:
        client = Client()
        client.force_login(user)
        cookie = client.cookies[settings.SESSION_COOKIE_NAME]
        page.context.add_cookies(
            [{"name": cookie.key, "value": cookie.value, "url": live_server.url, "httpOnly": True}]
        )

    return log_in


@pytest.fixture
def screenshot(request: pytest.FixtureRequest) -> Screenshot:
    """Save a full-page PNG to artifacts/screenshots/<name>.png (gitignored, kept for people to look at)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(page: Page, name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


@pytest.fixture
def onboard() -> Onboard:
    """Onboard a tenant through the service (for tests whose subject is a later page), own id each."""

    def make(plan: str = "STARTER", company_name: str = "Browser Test Ltd") -> OnboardingResult:
        tenant_id = f"bt_{uuid.uuid4().hex[:10]}"
        return tenant_onboard(
            tenant_id=tenant_id,
            company_name=company_name,
            admin_email=f"ops@{tenant_id.replace('_', '-')}.example.com",
            plan=plan,
            created_by="system:browser-tests",
        )

    return make
