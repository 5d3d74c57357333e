"""Browser-facing hardening: CSRF on every form, security headers, cookie flags, deploy checks, escaping."""

from __future__ import annotations

import html as html_lib
import io
import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve, reverse
from django.urls.resolvers import RegexPattern, RoutePattern

from tenants_app.models import AuditLogEntry, TenantPipelineConfig, TenantProfile
from tenants_app.repositories import central_repository
from tenants_app.security_headers import API_POLICY, PAGE_POLICY
from tenants_app.services.api_keys import api_key_create
from tenants_app.services.credentials import credential_create
from tests.support.people import TEST_PASSWORD
from tests.tenants_app.services.schedules import add_tenant, config_row

pytestmark = pytest.mark.django_db

BASE_DIR = Path(__file__).resolve().parents[2]
OPENAI_SECRET = "sk-" + "Zt7" * 12
# Injection strings a staff member might paste: none may run, be evaluated or break the page.
HOSTILE = "<script>alert('x')</script>\"><img src=x onerror=alert(1)>{{ 7*7 }}{% debug %}${7*7}' OR 1=1 --"


@pytest.fixture(autouse=True)
def _fast_passwords(settings: Any) -> None:
    """Users of these tests log in through the form: Django's default hasher costs a second each."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def portal(name: str, *args: str) -> str:
    return reverse(f"admin:portal-{name}", args=args)


# --- security headers ------------------------------------------------------------------------------------
def directives(policy: str) -> dict[str, str]:
    return {part.split(" ", 1)[0]: part.split(" ", 1)[1] for part in policy.split("; ")}


def test_it_sends_the_security_headers_on_portal_pages(anonymous_client: Client) -> None:
    response = anonymous_client.get("/admin/login/")

    assert response.status_code == 200
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    assert response["Cross-Origin-Resource-Policy"] == "same-origin"
    assert "camera=()" in response["Permissions-Policy"]
    assert "no-store" in response["Cache-Control"]
    policy = directives(response["Content-Security-Policy"])
    assert policy["default-src"] == "'self'"
    assert policy["script-src"] == "'self'"  # no inline script, no eval
    assert policy["frame-ancestors"] == "'none'"
    assert policy["object-src"] == "'none'"
    assert response["Content-Security-Policy"] == PAGE_POLICY


def test_it_sends_a_deny_everything_policy_and_no_store_on_api_responses(anonymous_client: Client) -> None:
    refused = anonymous_client.get("/api/v1/tenants")
    health = anonymous_client.get("/healthz")

    assert refused.status_code in {401, 403}
    assert refused["Content-Security-Policy"] == API_POLICY
    assert directives(API_POLICY)["default-src"] == "'none'"
    assert refused["Cache-Control"] == "no-store"
    assert refused["X-Frame-Options"] == "DENY"
    assert refused["X-Content-Type-Options"] == "nosniff"
    assert health["X-Frame-Options"] == "DENY"
    assert "Content-Security-Policy" in health


def test_it_serves_swagger_ui_under_the_portals_policy_without_inline_script(
    anonymous_client: Client,
) -> None:
    docs = anonymous_client.get("/api/docs/")
    page = parse(docs.content.decode())

    assert docs.status_code == 200
    assert docs["Content-Security-Policy"] == PAGE_POLICY
    # The start-up script is a file of the split view, not inline: 'self' allows it, no relaxation.
    assert not page.inline_scripts
    assert page.external_urls
    assert all(same_origin(url) for url in page.external_urls)
    script = anonymous_client.get("/api/docs/", {"script": ""})
    assert script.status_code == 200
    assert "SwaggerUIBundle" in script.content.decode()


class PageAudit(HTMLParser):
    """What a page would ask of a Content-Security-Policy."""

    def __init__(self) -> None:
        super().__init__()
        self.inline_scripts: list[str] = []
        self.handlers: list[str] = []
        self.javascript_urls: list[str] = []
        self.external_urls: list[str] = []
        self._in_inline_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.handlers += [f"{tag} {name}" for name, _ in attrs if name.startswith("on")]
        for name in ("href", "src", "action", "formaction"):
            value = (values.get(name) or "").strip()
            if value.lower().startswith("javascript:"):
                self.javascript_urls.append(value)
            elif value and (tag in {"script", "img", "iframe"} or (tag == "link" and name == "href")):
                self.external_urls.append(value)
        # <script type="application/json"> is data, which CSP does not block; the admin has none here.
        self._in_inline_script = tag == "script" and not values.get("src")

    def handle_data(self, data: str) -> None:
        if self._in_inline_script and data.strip():
            self.inline_scripts.append(data.strip()[:80])

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_inline_script = False


def parse(page: str) -> PageAudit:
    audit = PageAudit()
    audit.feed(page)
    return audit


def same_origin(url: str) -> bool:
    return (url.startswith("/") and not url.startswith("//")) or url.startswith("data:")


@pytest.fixture(scope="module")
def world(portal_dataset: str) -> dict[str, str]:
    """One tenant with a subscription, an API key, a credential and a pipeline config (module-wide)."""
    tenant_id = add_tenant(prefix="sec")
    key = api_key_create(tenant_id=tenant_id, name="ops key", scopes=["tenant:read"], created_by="test").row
    credential = credential_create(
        tenant_id=tenant_id,
        provider="OPENAI",
        name="openai",
        payload={"api_key": OPENAI_SECRET},
        created_by="test",
    )
    config = config_row(tenant_id)
    central_repository(TenantPipelineConfig).insert(config)
    return {
        "tenant_id": tenant_id,
        "api_key_id": key.api_key_id,
        "credential_id": credential.credential_id,
        "config_id": config.config_id,
    }


def test_it_serves_portal_pages_that_satisfy_the_policy(
    superuser_client: Client, world: dict[str, str]
) -> None:
    tenant_id = world["tenant_id"]
    pages = [
        "/admin/",
        # One page of each template family: our tenant, pipeline and dashboard pages, a form, the
        # BigQuery table list (filters.js), and a Django model form (its widgets' scripts).
        portal("tenant-detail", tenant_id),
        portal("tenant-key-create", tenant_id),
        portal("pipeline-detail", tenant_id, world["config_id"]),
        portal("dashboard"),
        reverse("admin:tenants_app_tenantprofile_changelist"),
        reverse("admin:auth_user_change", args=[User.objects.get(username="root").pk]),
    ]
    for url in pages:
        response = superuser_client.get(url)
        assert response.status_code == 200, url
        assert response["Content-Security-Policy"] == PAGE_POLICY, url
        # Admin pages are never cached: some show one-time keys, all show tenant data.
        assert "no-store" in response["Cache-Control"], url
        audit = parse(response.content.decode())
        assert audit.inline_scripts == [], (url, audit.inline_scripts)
        assert audit.handlers == [], (url, audit.handlers)
        assert audit.javascript_urls == [], url
        assert all(same_origin(u) for u in audit.external_urls), (url, audit.external_urls)


def test_it_sends_hsts_over_https_when_configured(settings: Any, db: None) -> None:
    settings.SECURE_HSTS_SECONDS = 31_536_000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True

    secure = Client().get("/admin/login/", secure=True)
    plain = Client().get("/admin/login/")

    assert secure["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert "Strict-Transport-Security" not in plain  # never over plain HTTP, as the RFC says


def test_it_refuses_an_oversized_portal_body_before_reading_it(settings: Any, db: None) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    client = Client(enforce_csrf_checks=True)
    client.get("/admin/login/")
    token = client.cookies["csrftoken"].value
    upload = io.BytesIO(b"x" * 20_000)
    upload.name = "big.bin"

    # A file part is not counted by Django's own limit: without ours it would be spooled to disk.
    refused = client.post("/admin/login/", {"csrfmiddlewaretoken": token, "file": upload})
    small = client.post("/admin/login/", {"csrfmiddlewaretoken": token, "username": "x", "password": "y"})

    assert refused.status_code == 413
    assert small.status_code == 200


# --- cookies ---------------------------------------------------------------------------------------------
def login_through_the_form(client: Client, username: str = "root") -> Any:
    page = client.get("/admin/login/")
    token = page.cookies["csrftoken"].value
    return client.post(
        "/admin/login/",
        {"username": username, "password": TEST_PASSWORD, "csrfmiddlewaretoken": token},
    )


def test_it_sets_the_session_and_csrf_cookies_httponly_and_samesite(superuser: User) -> None:
    client = Client(enforce_csrf_checks=True)
    csrf = client.get("/admin/login/").cookies["csrftoken"]
    response = login_through_the_form(client)
    session = response.cookies["sessionid"]

    assert response.status_code == 302
    for cookie in (csrf, session):
        assert cookie["httponly"] is True
        assert cookie["samesite"] == "Lax"
        assert not cookie["secure"]  # plain HTTP in development; see the next test
    assert int(session["max-age"]) == 12 * 3600


def test_it_marks_the_cookies_secure_when_configured(settings: Any, superuser: User) -> None:
    settings.SESSION_COOKIE_SECURE = True
    settings.CSRF_COOKIE_SECURE = True
    client = Client(enforce_csrf_checks=True)

    csrf = client.get("/admin/login/", secure=True).cookies["csrftoken"]
    session = client.post(
        "/admin/login/",
        {"username": "root", "password": TEST_PASSWORD, "csrfmiddlewaretoken": csrf.value},
        secure=True,
        # Over HTTPS Django also checks that the POST comes from our own origin.
        HTTP_REFERER="https://testserver/admin/login/",
    ).cookies["sessionid"]

    assert csrf["secure"] is True
    assert session["secure"] is True


# --- production settings from the environment -----------------------------------------------------------
def production_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    keep = {name: value for name, value in os.environ.items() if not name.startswith(("DJANGO_", "LOGIN_"))}
    return {
        **keep,
        "DATA_DIR": str(tmp_path),
        "DJANGO_SECRET_KEY": "q" * 10 + "Zx8!pL2@wR5#vN9$kM4%tB7^yH1&cF6*jD3(sG0)" + "u" * 10,
        "DJANGO_DEBUG": "false",
        "DJANGO_ALLOWED_HOSTS": "portal.example.com",
        "DJANGO_CSRF_TRUSTED_ORIGINS": "https://portal.example.com",
        "DJANGO_SECURE_COOKIES": "true",
        "DJANGO_HSTS_SECONDS": "31536000",
        "DJANGO_SECURE_SSL_REDIRECT": "true",
        "DJANGO_TRUST_X_FORWARDED_PROTO": "true",
        **extra,
    }


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own manage.py with arguments of this test
        [sys.executable, str(BASE_DIR / "manage.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=BASE_DIR,
    )


PRODUCTION_SETTINGS = [
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "SESSION_COOKIE_HTTPONLY",
    "CSRF_COOKIE_HTTPONLY",
    "SESSION_COOKIE_SAMESITE",
    "SECURE_HSTS_SECONDS",
    "SECURE_SSL_REDIRECT",
    "SECURE_PROXY_SSL_HEADER",
    "LOGIN_RATE_LIMIT_ATTEMPTS",
    "LOGIN_RATE_LIMIT_WINDOW_SECONDS",
]
STRONG_SECRET = "q" * 10 + "Zx8!pL2@wR5#vN9$kM4%tB7^yH1&cF6*jD3(sG0)" + "u" * 10


def test_it_passes_the_deploy_check_with_a_production_environment(tmp_path: Path) -> None:
    """One process started with a production environment: its settings, and `check --deploy`."""
    env = production_env(tmp_path, LOGIN_RATE_LIMIT_ATTEMPTS="7", LOGIN_RATE_LIMIT_WINDOW_SECONDS="120")
    script = (
        "import json; from django.conf import settings; from django.core.management import call_command; "
        f"print(json.dumps({{n: getattr(settings, n) for n in {PRODUCTION_SETTINGS!r}}})); "
        "call_command('check', deploy=True)"
    )
    result = manage(env, "shell", "-c", script)

    assert result.returncode == 0, result.stderr
    printed = next(line for line in result.stdout.splitlines() if line.startswith("{"))
    assert json.loads(printed) == {
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SESSION_COOKIE_HTTPONLY": True,
        "CSRF_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SECURE_HSTS_SECONDS": 31_536_000,
        "SECURE_SSL_REDIRECT": True,
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
        "LOGIN_RATE_LIMIT_ATTEMPTS": 7,
        "LOGIN_RATE_LIMIT_WINDOW_SECONDS": 120,
    }
    # Left: HSTS for subdomains and preloading, which only the owner of the domain can decide.
    assert set(re.findall(r"security\.W\d+", result.stdout + result.stderr)) == {
        "security.W005",
        "security.W021",
    }


def deploy_warnings() -> set[str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("check", deploy=True, stdout=out, stderr=err)
    return set(re.findall(r"security\.W\d+", out.getvalue() + err.getvalue()))


def test_it_leaves_no_deploy_warning_with_hsts_for_subdomains_and_preload(settings: Any) -> None:
    settings.SECRET_KEY = STRONG_SECRET
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31_536_000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = settings.SECURE_HSTS_PRELOAD = True

    assert deploy_warnings() == set()


def test_it_warns_about_every_missing_https_setting_with_the_development_defaults(settings: Any) -> None:
    settings.SECRET_KEY = STRONG_SECRET

    assert deploy_warnings() == {"security.W004", "security.W008", "security.W012", "security.W016"}


# --- CSRF on every form ----------------------------------------------------------------------------------
SAMPLES = {
    "app_label": None,  # taken from the pattern's own alternatives
    "object_id": "tenant_id",
    "content_type_id": "1",
    "id": "1",
}


def _route_to_path(route: str, kwargs: dict[str, str]) -> str:
    return re.sub(r"<(?:\w+:)?(\w+)>", lambda m: kwargs[m.group(1)], route)


def _regex_to_path(regex: str, world: dict[str, str]) -> str | None:
    """A path matching one of the admin's regex patterns (the app index and the catch-all)."""
    match = re.fullmatch(r"\^\(\?P<app_label>([\w|]+)\)/\$", regex)
    if match:
        return match.group(1).split("|")[0] + "/"
    return None


def admin_post_targets(world: dict[str, str]) -> list[str]:
    """Every named URL of the portal (Django's admin plus our pages) with real ids filled in."""
    values = {
        **world,
        "content_type_id": "1",
        "id": "1",
        "object_id": world["tenant_id"],
        "run_id": "run_nothing",
        "endpoint_id": "whe_nothing",
    }
    found: list[str] = []

    def walk(patterns: list[URLPattern | URLResolver], prefix: str) -> None:
        for entry in patterns:
            pattern = entry.pattern
            if isinstance(pattern, RoutePattern):
                names = re.findall(r"<(?:\w+:)?(\w+)>", str(pattern))
                missing = [n for n in names if n not in values]
                assert not missing, f"no sample value for {missing} in {pattern}: add one to the test"
                part: str | None = _route_to_path(str(pattern), values)
            else:
                assert isinstance(pattern, RegexPattern)
                part = _regex_to_path(pattern.regex.pattern, world)
            if isinstance(entry, URLResolver):
                assert part is not None, f"cannot build a path for {pattern}"
                walk(entry.url_patterns, prefix + part)
            elif entry.name is not None:
                assert part is not None, f"cannot build a path for the named URL {entry.name}: {pattern}"
                found.append(prefix + part)

    walk(admin.site.get_urls(), "/admin/")
    return found


def portal_state(world: dict[str, str]) -> tuple[Any, ...]:
    """What a forged POST could change: the tenant's rows, its audit trail and the Django users."""
    tenant_id = world["tenant_id"]
    profile = central_repository(TenantProfile).get(tenant_id)
    audit = central_repository(AuditLogEntry).count(filters={"tenant_id": tenant_id})
    users = sorted(User.objects.values_list("username", "password", "is_active", "is_staff", "is_superuser"))
    return profile, audit, users


FORGED = {
    "confirm_tenant_id": "{tenant_id}",
    "reason": "forged",
    "plan": "SCALE",
    "action": "confirm",
    "grace": "0",
    "company_name": "Forged Ltd",
    "admin_email": "forged@example.com",
    "name": "forged",
    "username": "root",
    "password": TEST_PASSWORD,
    "old_password": TEST_PASSWORD,
    "new_password1": "Forged-password-123",
    "new_password2": "Forged-password-123",
    "password1": "Forged-password-123",
    "password2": "Forged-password-123",
    "post": "yes",
    "status": "SUSPENDED",
}


def test_it_refuses_a_post_without_the_csrf_token_on_every_portal_url(
    superuser_client: Client, world: dict[str, str]
) -> None:
    targets = admin_post_targets(world)
    client = Client(enforce_csrf_checks=True)
    client.cookies = superuser_client.cookies  # the victim's logged-in session
    client.get("/admin/")  # and its CSRF cookie, which a forged cross-site POST carries too
    assert "csrftoken" in client.cookies
    body = {name: value.format(**world) for name, value in FORGED.items()}
    before = portal_state(world)

    refused = {url: client.post(url, body) for url in targets}

    assert len(targets) > 40  # the admin's pages and ours, not an empty walk
    assert "/admin/logout/" in targets
    assert "/admin/login/" in targets
    assert portal("tenant-offboard", world["tenant_id"]) in targets
    wrong = {url: r.status_code for url, r in refused.items() if r.status_code != 403}
    assert wrong == {}
    assert all(b"CSRF verification failed" in r.content for r in refused.values())
    assert portal_state(world) == before
    # The same POST with the token gets through: the 403 above was the CSRF check, not something else.
    page = client.get(portal("tenant-edit", world["tenant_id"]))
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())
    assert token is not None
    genuine = client.post(
        portal("tenant-edit", world["tenant_id"]),
        {
            "company_name": "Genuine Ltd",
            "admin_email": "ops@genuine.example",
            "csrfmiddlewaretoken": token[1],
        },
    )
    assert genuine.status_code == 302
    assert central_repository(TenantProfile).get(world["tenant_id"]).company_name == "Genuine Ltd"


def api_unsafe_targets(world: dict[str, str]) -> list[tuple[str, str]]:
    """(method, path) of every API view method that changes something, with real ids filled in."""
    values = {**world, "run_id": "run_nothing", "endpoint_id": "whk_nothing"}
    targets = []
    api = get_resolver().resolve("/api/v1/tenants").route.rsplit("tenants", 1)[0]
    for entry in get_resolver("tenants_app.api.urls").url_patterns:
        path = "/" + api + _route_to_path(str(entry.pattern), values)
        view = resolve(path).func.view_class  # type: ignore[attr-defined]
        for method in ("post", "put", "patch", "delete"):
            if hasattr(view, method):
                targets.append((method, path))
    return targets


def test_it_refuses_session_authenticated_api_changes_without_the_csrf_token(
    superuser_client: Client, world: dict[str, str]
) -> None:
    client = Client(enforce_csrf_checks=True)
    client.cookies = superuser_client.cookies
    client.get("/admin/")
    before = portal_state(world)

    results = {
        (method, path): getattr(client, method)(path, {"reason": "forged"}, content_type="application/json")
        for method, path in api_unsafe_targets(world)
    }

    assert len(results) > 20
    for (method, path), response in results.items():
        message = response.json()["error"]["message"]
        if path.startswith("/api/v1/worker/"):
            # The worker API takes no session at all: the cookie authenticates nothing there.
            assert response.status_code in {401, 403}, (method, path)
        else:
            assert (response.status_code, "CSRF Failed" in message) == (403, True), (method, path, message)
    assert portal_state(world) == before


# --- injection strings render escaped --------------------------------------------------------------------
def test_it_renders_injection_strings_entered_in_portal_forms_escaped(
    superuser_client: Client, world: dict[str, str]
) -> None:
    tenant_id = add_tenant(prefix="esc")
    edited = superuser_client.post(
        portal("tenant-edit", tenant_id), {"company_name": HOSTILE, "admin_email": "ops@esc.example"}
    )
    issued = superuser_client.post(
        portal("tenant-key-create", tenant_id), {"name": HOSTILE, "scopes": ["tenant:read"]}, follow=True
    )
    assert (edited.status_code, issued.status_code) == (302, 200)
    assert "no-store" in issued["Cache-Control"]  # the page shows the new key, once
    assert central_repository(TenantProfile).get(tenant_id).company_name == HOSTILE  # stored verbatim

    pages = {
        "issued": issued,
        "detail": superuser_client.get(portal("tenant-detail", tenant_id)),
        "edit": superuser_client.get(portal("tenant-edit", tenant_id)),
        # The table list shortens long cells: its part of the text is checked.
        "list": superuser_client.get(reverse("admin:tenants_app_tenantprofile_changelist"), {"q": tenant_id}),
    }
    for name, response in pages.items():
        page = response.content.decode()
        shown = HOSTILE[:40] if name == "list" else HOSTILE
        assert response.status_code == 200, name
        assert "<script>alert" not in page, name
        assert "<img src=x" not in page, name
        assert html_lib.escape(shown) in page or html_lib.escape(shown, quote=False) in page, name
    # Shown as text, never run as a template.
    assert "{% debug %}" in html_lib.unescape(pages["detail"].content.decode())
