"""DRF authentication for the admin API token (`Authorization: Bearer cvg_admin_...`)."""

from __future__ import annotations

from django.contrib.auth.models import User
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from tenants_app.models import AdminApiToken
from tenants_app.services.admin_tokens import TOKEN_PREFIX, admin_token_authenticate


class AdminTokenAuthentication(authentication.BaseAuthentication):
    """Staff members' API tokens; a wrong token is a 401, never a silent anonymous request."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[User, AdminApiToken] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        scheme, _, credentials = header.partition(" ")
        if scheme != self.keyword or not credentials.startswith(TOKEN_PREFIX):
            # Not ours: leave it to the other authentication classes.
            return None
        token = admin_token_authenticate(plaintext=credentials.strip())
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked admin token.")
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return self.keyword
