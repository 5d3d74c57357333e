"""Logging in to the portal through Django's login form, in a real browser."""

from __future__ import annotations

import re

from django.contrib.auth.models import User
from playwright.sync_api import Page, expect

from tests.portal.browser.conftest import PASSWORD, Screenshot


def test_it_logs_in_through_the_login_form_and_shows_the_index(
    page: Page, superuser: User, screenshot: Screenshot
) -> None:
    page.goto("/admin/")
    # Anonymous visitors are sent to the login page, which comes back to the index afterwards.
    expect(page).to_have_url(re.compile(r"/admin/login/\?next=/admin/$"))
    screenshot(page, "01-login")

    page.fill("#id_username", superuser.username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")

    expect(page).to_have_url(re.compile(r"/admin/$"))
    expect(page.locator("#site-name")).to_have_text("Convergence tenant administration")
    expect(page.locator("#user-tools strong")).to_have_text(superuser.username)
    screenshot(page, "02-index")


def test_it_refuses_a_wrong_password_with_a_message(page: Page, superuser: User) -> None:
    page.goto("/admin/login/")
    page.fill("#id_username", superuser.username)
    page.fill("#id_password", "not-the-password")
    page.click("input[type=submit]")

    expect(page.locator(".errornote")).to_contain_text("correct username and password")
    expect(page).to_have_url(re.compile(r"/admin/login/"))
