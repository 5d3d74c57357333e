"""The site's entry points: `/` and "View site" lead to the portal, and every page has its icon."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.staticfiles import finders
from django.templatetags.static import static
from django.test import Client

pytestmark = pytest.mark.django_db

ICON = "portal/favicon.svg"


def test_it_redirects_the_root_to_the_portal_index(
    anonymous_client: Client, superuser_client: Client
) -> None:
    anonymous = anonymous_client.get("/")
    signed_in = superuser_client.get("/", follow=True)

    assert anonymous.status_code == 302
    assert anonymous["Location"] == "/admin/"
    assert signed_in.redirect_chain == [("/admin/", 302)]
    assert signed_in.status_code == 200


def test_it_answers_favicon_ico_with_the_portal_icon(anonymous_client: Client) -> None:
    response = anonymous_client.get("/favicon.ico")

    assert response.status_code == 302
    assert response["Location"] == static(ICON)
    found = finders.find(ICON)
    assert isinstance(found, str)
    assert Path(found).read_text().startswith("<svg")


def test_it_links_the_icon_on_every_page_the_login_page_included(
    anonymous_client: Client, superuser_client: Client
) -> None:
    link = f'<link rel="icon" href="{static(ICON)}" type="image/svg+xml">'

    assert link in anonymous_client.get("/admin/login/").content.decode()
    assert link in superuser_client.get("/admin/").content.decode()


def test_it_leads_view_site_to_the_portal_index(superuser_client: Client) -> None:
    page = superuser_client.get("/admin/").content.decode()

    assert '<a href="/admin/">View site</a>' in page
