"""Role checks at the API's door. What exactly a writer may change (team ownership, ASIL-D,
SAFETY approval) is decided by the services; this only keeps READ keys to reading."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from accounts.authentication import info_roles
from core.actors import ROLE_ADMIN, ROLE_READ, ROLE_SAFETY, ROLE_WRITE, Actor

WRITE_ROLES = (ROLE_ADMIN, ROLE_WRITE, ROLE_SAFETY)
ALL_ROLES = (ROLE_ADMIN, ROLE_WRITE, ROLE_READ, ROLE_SAFETY)


def roles_of(request: Request) -> frozenset[str]:
    roles = info_roles(request._request)
    if roles is not None:
        return roles
    cached: frozenset[str] | None = getattr(request._request, "_ff_roles", None)
    if cached is None:
        cached = Actor.for_user(request.user).roles
        request._request._ff_roles = cached  # type: ignore[attr-defined]
    return cached


class ApiAccess(BasePermission):
    """Reading needs any role; writing needs ADMIN, WRITE or SAFETY (a view may narrow it)."""

    message = "this API key or user may not do that"

    def has_permission(self, request: Request, view: Any) -> bool:
        if request.user is None or not request.user.is_authenticated:
            return False
        roles = roles_of(request)
        safe = request.method in ("GET", "HEAD", "OPTIONS")
        wanted = ALL_ROLES if safe else getattr(view, "write_roles", WRITE_ROLES)
        return not roles.isdisjoint(wanted)
