"""Who is calling: ``Authorization: Bearer <api key>`` for scripts, the session for admin users.

``resolve_key`` is the one check of a key (cache first; see ``accounts.keys``), shared by
the DRF authentication class and the async hot views. A valid key is put on the Django
request as ``request.api_key`` (an ``ApiKey``), so ``Actor.from_request`` audits the key.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication, SessionAuthentication
from rest_framework.request import Request

from accounts import keys
from accounts.keys import KeyInfo
from flags.api.exceptions import ApiError

BEARER_REALM = 'Bearer realm="fleetflag"'


class KeyPrincipal:
    """``request.user`` for a request made with an API key (DRF wants a user-like object)."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False

    def __init__(self, info: KeyInfo) -> None:
        self.info = info
        self.pk = info.user_id
        self.id = info.user_id

    def __str__(self) -> str:
        return f"api-key:{self.info.name}"


def bearer_token(request: HttpRequest) -> str | None:
    """The raw key from the Authorization header; None when the header is not a bearer one."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip()


def _checked(info: KeyInfo | None) -> KeyInfo:
    if info is None:
        raise ApiError(401, "invalid_api_key", "the API key is not valid")
    refusal = info.refusal()
    if refusal is not None:
        raise ApiError(401, refusal[0], refusal[1])
    return info


def resolve_key(raw: str) -> KeyInfo:
    """The key's info, or ApiError 401 (unknown, revoked, inactive, expired). Sync callers."""
    info = _checked(keys.lookup(raw))
    if keys.touch_due(info):
        keys.touch_write(info.id)
    return info


async def aresolve_key(raw: str) -> KeyInfo:
    """As ``resolve_key``, for async views: the database only on a cache miss, in a thread."""
    from flags.api.hot import db

    found = keys.cached_lookup(raw)
    if found is None:
        found = await db(keys.load)(raw)
    info = _checked(found if isinstance(found, KeyInfo) else None)
    if keys.touch_due(info):
        await db(keys.touch_write)(info.id)
    return info


def attach(request: HttpRequest, info: KeyInfo) -> None:
    request.api_key = info.as_model()  # type: ignore[attr-defined]
    request.api_key_info = info  # type: ignore[attr-defined]


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        raw = bearer_token(request._request)
        if raw is None:
            return None
        info = resolve_key(raw)
        attach(request._request, info)
        return KeyPrincipal(info), info

    def authenticate_header(self, request: Request) -> str:
        return BEARER_REALM


class StaffSessionAuthentication(SessionAuthentication):
    """Admin users (staff) with their browser session; unsafe methods need the CSRF token."""

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        found = super().authenticate(request)
        if found is None or not getattr(found[0], "is_staff", False):
            return None
        return found


def info_roles(request: HttpRequest) -> frozenset[str] | None:
    info: KeyInfo | None = getattr(request, "api_key_info", None)
    return info.roles if info is not None else None


class ApiKeyScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "flags.api.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "http", "scheme": "bearer", "bearerFormat": "ffk_<prefix>_<secret>",
                "description": "An API key: `Authorization: Bearer ffk_...`"}


class StaffSessionScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "flags.api.authentication.StaffSessionAuthentication"
    name = "Session"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "apiKey", "in": "cookie", "name": "sessionid",
                "description": "The admin session (staff users); unsafe methods need the X-CSRFToken header."}
