"""What no API view answers still answers in the API's JSON envelope under /api/; the portal keeps HTML."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings
from django.urls import path
from rest_framework.test import APIClient

from convergence import urls as project_urls

pytestmark = pytest.mark.django_db

ApiAs = Callable[[User | None], APIClient]


def crash(request: object) -> None:
    raise RuntimeError("a bug, not the client's fault")


# The project's URLs and error handlers, plus one view that fails as a bug would.
urlpatterns = [path("api/v1/crash", crash), path("crash/", crash), *project_urls.urlpatterns]
handler400 = project_urls.handler400
handler403 = project_urls.handler403
handler404 = project_urls.handler404
handler500 = project_urls.handler500


def assert_envelope(response: object, status: int, code: str) -> None:
    assert response.status_code == status  # type: ignore[attr-defined]
    assert response["Content-Type"] == "application/json"  # type: ignore[index]
    assert response.json() == {"error": {"code": code, "message": response.json()["error"]["message"]}}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/nope",
        "/api/nope/",
        "/api/v1/tenants/x/nope",
        "/api/v1/me/keys/k/nope",
        "/api",
        "/api/",
        "/api/v2/tenants",
        "/api/v1/%3Cscript%3E",
    ],
)
@pytest.mark.parametrize("as_staff", [False, True], ids=["anonymous", "staff"])
def test_it_answers_an_unknown_api_path_with_a_json_404(
    api_as: ApiAs, superuser: User, url: str, as_staff: bool
) -> None:
    response = api_as(superuser if as_staff else None).get(url)

    assert_envelope(response, 404, "not_found")
    assert "script" not in response.content.decode()


@pytest.mark.parametrize(
    ("method", "url"),
    [("post", "/api/docs/"), ("post", "/api/schema/")],
    ids=["swagger-ui", "schema"],
)
def test_it_answers_a_method_an_endpoint_lacks_with_a_json_405_even_where_it_serves_html_or_yaml(
    api_as: ApiAs, superuser: User, method: str, url: str
) -> None:
    response = getattr(api_as(superuser), method)(url)

    assert_envelope(response, 405, "method_not_allowed")


@override_settings(ROOT_URLCONF=__name__)
def test_it_answers_a_crash_under_the_api_with_a_json_500_while_the_portal_keeps_html() -> None:
    client = Client(raise_request_exception=False)

    api = client.get("/api/v1/crash")
    portal = client.get("/crash/")
    portal_missing = [client.get(url) for url in ("/admin-nope/", "/apinope/")]

    assert_envelope(api, 500, "server_error")
    assert "a bug" not in api.content.decode()
    assert portal.status_code == 500
    assert portal["Content-Type"].startswith("text/html")
    assert [r.status_code for r in portal_missing] == [404, 404]
    assert all(r["Content-Type"].startswith("text/html") for r in portal_missing)
