"""Who is calling: ``Authorization: Bearer <api key>`` for scripts, the session for admin users.

**The one key check** is ``_steps``: bearer -> key or refusal (401) -> roles (403) -> rate
limit (429) -> the ``last_used_at`` touch decision. Three fronts run it, differing only in
how they read the key and write the touch:

- ``check_key`` (sync: the DRF authentication class),
- ``acheck_key`` (async: the hot views' guard, the database only on a cache miss),
- ``check_cached`` (caches only, never the database: the hot lane's steady-state 304;
  it hands the touch decision back to its caller, which writes it — a decision taken once
  is never asked for twice).

A valid key is put on the Django request as ``request.api_key`` (an unsaved ``ApiKey``
stand-in) and ``request.api_key_info``, so ``Actor.from_request`` audits the key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication, SessionAuthentication
from rest_framework.request import Request

from accounts import keys
from accounts.codes import KeyCode
from accounts.keys import KeyInfo
from accounts.throttling import hit
from core.actors import ROLES, Actor
from core.errors import Code
from core.http.errors import ApiError, error_response
from core.http.threads import db

BEARER_REALM = 'Bearer realm="fleetflag"'
ALL_ROLES = frozenset(ROLES)


def bearer_token(request: HttpRequest) -> str | None:
    """The raw key from the Authorization header; None when the header is not a bearer one."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip()


def _steps(found: KeyInfo | None, allowed: frozenset[str]) -> tuple[KeyInfo, bool]:
    """The check itself, on a key already read: (the key, whether to write last_used_at now)."""
    if found is None:
        raise ApiError(401, KeyCode.INVALID_API_KEY, "the API key is not valid")
    refusal = found.refusal()
    if refusal is not None:
        raise ApiError(401, refusal[0], refusal[1])
    if found.roles.isdisjoint(allowed):
        raise ApiError(403, Code.PERMISSION_DENIED, f"API key ffk_{found.prefix} may not do that")
    wait = hit(found)
    if wait is not None:
        raise ApiError(429, Code.RATE_LIMITED, f"rate limit exceeded; retry in {wait} s",
                       headers={"Retry-After": str(wait)})
    return found, keys.touch_due(found)


def check_key(raw: str, allowed: frozenset[str] = ALL_ROLES) -> KeyInfo:
    """The key's info, or ApiError (401/403/429). Sync callers."""
    info, touch = _steps(keys.lookup(raw), allowed)
    if touch:
        keys.touch_write(info.id)
    return info


async def acheck_key(raw: str, allowed: frozenset[str] = ALL_ROLES) -> KeyInfo:
    """As ``check_key``, for async views: the database only on a cache miss, in a thread."""
    found = keys.cached_lookup(raw)
    if found is None:
        found = await db(keys.load)(raw)
    info, touch = _steps(found if isinstance(found, KeyInfo) else None, allowed)
    if touch:
        await db(keys.touch_write)(info.id)
    return info


def check_cached(raw: str, allowed: frozenset[str]) -> tuple[KeyInfo, bool] | None:
    """From the caches only: None when the key is not cached in this process or the shared
    cache (the caller then lets the view answer); else as ``_steps``, raising the refusal."""
    found = keys.cached_lookup(raw)
    if found is None:
        return None
    return _steps(found if isinstance(found, KeyInfo) else None, allowed)


def attach(request: HttpRequest, info: KeyInfo) -> None:
    request.api_key = info.as_model()  # type: ignore[attr-defined]
    request.api_key_info = info  # type: ignore[attr-defined]


def info_roles(request: HttpRequest) -> frozenset[str] | None:
    info: KeyInfo | None = getattr(request, "api_key_info", None)
    return info.roles if info is not None else None


# -- DRF ---------------------------------------------------------------------------------------------


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


class ApiKeyAuthentication(BaseAuthentication):
    """The whole key check, rate limit included (sessions are not rate limited)."""

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        raw = bearer_token(request._request)
        if raw is None:
            return None
        info = check_key(raw)
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


class ApiKeyScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "accounts.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "http", "scheme": "bearer", "bearerFormat": "ffk_<prefix>_<secret>",
                "description": "An API key: `Authorization: Bearer ffk_...`"}


class StaffSessionScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "accounts.authentication.StaffSessionAuthentication"
    name = "Session"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "apiKey", "in": "cookie", "name": "sessionid",
                "description": "The admin session (staff users); unsafe methods need the X-CSRFToken header."}


# -- the guard of the hot (plain async) views ------------------------------------------------------


class Caller:
    __slots__ = ("info", "roles", "session")

    def __init__(self, info: KeyInfo | None, roles: frozenset[str], session: bool) -> None:
        self.info = info
        self.roles = roles
        self.session = session


async def authenticate(request: HttpRequest, key_roles: frozenset[str], session_roles: frozenset[str]) -> Caller:
    """A bearer key through the one check, else a staff session (with CSRF on unsafe methods)."""
    raw = bearer_token(request)
    if raw is not None:
        info = await acheck_key(raw, key_roles)
        # Only the key's info: these views make no audit entries, so no ApiKey object is built.
        request.api_key_info = info  # type: ignore[attr-defined]
        return Caller(info, info.roles, False)
    auser = getattr(request, "auser", None)
    user = await auser() if auser is not None else None
    if user is None or not user.is_authenticated or not user.is_staff:
        raise ApiError(401, Code.NOT_AUTHENTICATED,
                       "authenticate with Authorization: Bearer <api key> or a session")
    roles = await db(lambda: Actor.for_user(user).roles)()
    if roles.isdisjoint(session_roles):
        raise ApiError(403, Code.PERMISSION_DENIED, f"{user.get_username()} may not do that")
    if request.method not in ("GET", "HEAD"):
        refusal = CsrfViewMiddleware(_no_view).process_view(request, _no_view, (), {})
        if refusal is not None:
            raise ApiError(403, Code.CSRF_FAILED, "CSRF check failed: send the X-CSRFToken header")
    return Caller(None, roles, True)


def _no_view(request: HttpRequest) -> HttpResponse:  # pragma: no cover - CSRF checks need a callback
    return HttpResponse()


Handler = Callable[..., Awaitable[HttpResponse]]


def hot_view(methods: tuple[str, ...], key_roles: frozenset[str] = ALL_ROLES,
             session_roles: frozenset[str] = ALL_ROLES) -> Callable[[Handler], Any]:
    """Wrap a hot handler: method check, the guard, errors in the API's format. The view is
    marked ``hot`` (``core.http.lane.HotLane`` and ``core.http.edge`` serve bearer requests
    for it past Django's sync middleware)."""

    def decorate(handler: Handler) -> Any:
        @csrf_exempt  # sessions are checked in authenticate(); bearer keys need no CSRF token
        async def view(request: HttpRequest, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                return error_response(request, 405, Code.METHOD_NOT_ALLOWED, f"method {request.method} not allowed",
                                      headers={"Allow": ", ".join(methods)})
            try:
                caller = await authenticate(request, key_roles, session_roles)
                return await handler(request, caller, **kwargs)
            except ApiError as exc:
                return error_response(request, exc.status_code, exc.error_code, exc.message, fields=exc.fields,
                                      headers=exc.headers)

        view.hot = True  # type: ignore[attr-defined]
        return view

    return decorate
