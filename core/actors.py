"""Who acts, and from where: carried from the interface into the services and the audit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ROLE_ADMIN = "ADMIN"
ROLE_WRITE = "WRITE"
ROLE_READ = "READ"
ROLE_SAFETY = "SAFETY"
ROLES = (ROLE_ADMIN, ROLE_WRITE, ROLE_READ, ROLE_SAFETY)


@dataclass(frozen=True)
class Actor:
    """A user, an API key (possibly bound to a user), or a named system process."""

    user: Any = None
    api_key: Any = None
    system: str = ""
    roles: frozenset[str] = field(default_factory=frozenset)
    ip: str | None = None
    user_agent: str = ""
    request_id: str = ""

    @classmethod
    def for_user(cls, user: Any, **meta: Any) -> Actor:
        roles = frozenset(user.groups.values_list("name", flat=True)) if user is not None and user.pk else frozenset()
        if getattr(user, "is_superuser", False):
            roles = roles | {ROLE_ADMIN}
        return cls(user=user, roles=roles, **meta)

    @classmethod
    def for_api_key(cls, api_key: Any, **meta: Any) -> Actor:
        if api_key.user_id is not None:
            base = cls.for_user(api_key.user)
            return cls(user=api_key.user, api_key=api_key, roles=base.roles, **meta)
        return cls(api_key=api_key, roles=frozenset({api_key.role}), **meta)

    @classmethod
    def for_system(cls, name: str, *, roles: frozenset[str] = frozenset({ROLE_ADMIN})) -> Actor:
        return cls(system=name, roles=roles, request_id="")

    @classmethod
    def from_request(cls, request: Any) -> Actor:
        meta = {
            "ip": client_ip(request),
            "user_agent": request.META.get("HTTP_USER_AGENT", "")[:512],
            "request_id": getattr(request, "request_id", ""),
        }
        api_key = getattr(request, "api_key", None)
        if api_key is not None:
            return cls.for_api_key(api_key, **meta)
        return cls.for_user(request.user, **meta)

    def has_role(self, *roles: str) -> bool:
        return not self.roles.isdisjoint(roles)

    @property
    def user_id(self) -> int | None:
        return getattr(self.user, "pk", None)

    @property
    def label(self) -> str:
        if self.api_key is not None:
            owner = f" for {self.user.get_username()}" if self.user is not None else ""
            return f"api-key:{self.api_key.name}{owner}"
        if self.user is not None:
            return str(self.user.get_username())
        return f"system:{self.system or 'unknown'}"

    @property
    def person_ids(self) -> frozenset[int]:
        """Every user this actor stands for: the user, and an API key's bound user and creator
        (a key someone made for themselves is that person, for the two-person rule)."""
        ids = {self.user_id}
        if self.api_key is not None:
            ids |= {getattr(self.api_key, "user_id", None), getattr(self.api_key, "created_by_id", None)}
        return frozenset(i for i in ids if i is not None)


def client_ip(request: Any) -> str | None:
    # Behind a load balancer the first X-Forwarded-For hop is the client; the proxy is
    # trusted to overwrite the header (documented in docs/operations.md).
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    ip = forwarded.split(",")[0].strip() if forwarded else request.META.get("REMOTE_ADDR")
    return ip or None
