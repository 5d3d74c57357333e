"""DRF authentication: staff admin tokens (`Authorization: Bearer ...`) and tenant keys (`X-API-Key`)."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import User
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from tenants_app.log_context import bind_log_context
from tenants_app.models import AdminApiToken
from tenants_app.services.actors import api_key_actor
from tenants_app.services.admin_tokens import TOKEN_PREFIX, admin_token_authenticate
from tenants_app.services.api_key_verification import VerifiedApiKey, api_key_verify
from tenants_app.services.errors import ServiceError


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


class KeyRefused(exceptions.APIException):
    """A refused key as DRF expects it (so the request counts as unauthenticated), keeping our code.

    Invalid, revoked, expired (401) and suspended (403) keep their own codes through the API's error
    handler, so a client can tell "rotate your key" from "talk to us".
    """

    def __init__(self, error: ServiceError) -> None:
        super().__init__(detail=error.message, code=error.code)
        self.status_code = error.status
        self.default_code = error.code


class KeyNotAccepted(KeyRefused, exceptions.AuthenticationFailed):
    """A 401 refusal (invalid, revoked, expired): as an AuthenticationFailed, DRF adds `WWW-Authenticate`.

    RFC 9110 requires the header on every 401; a suspended tenant's 403 stays a plain KeyRefused.
    """


@dataclass(frozen=True)
class TenantPrincipal:
    """The caller behind a tenant API key: never staff, only ever its own tenant."""

    tenant_id: str
    api_key_id: str
    scopes: tuple[str, ...]
    is_authenticated: bool = True
    is_active: bool = True
    is_staff: bool = False
    is_superuser: bool = False
    pk: None = None

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    def __str__(self) -> str:
        return api_key_actor(self.api_key_id)


class TenantApiKeyAuthentication(authentication.BaseAuthentication):
    """`X-API-Key: cvg_live_...`; verification is served from the cache after the first lookup."""

    header = "X-API-Key"

    def authenticate(self, request: Request) -> tuple[TenantPrincipal, VerifiedApiKey] | None:
        key = request.headers.get(self.header)
        if key is None:
            return None
        try:
            verified = api_key_verify(key=key.strip())
        except ServiceError as error:
            raise (KeyNotAccepted if error.status == 401 else KeyRefused)(error) from None
        bind_log_context(tenant_id=verified.tenant_id, actor=api_key_actor(verified.api_key_id))
        principal = TenantPrincipal(
            tenant_id=verified.tenant_id, api_key_id=verified.api_key_id, scopes=verified.scopes
        )
        return principal, verified

    def authenticate_header(self, request: Request) -> str:
        return self.header
