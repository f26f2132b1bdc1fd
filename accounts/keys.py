"""API key material: making, hashing, and the cached lookup the API authenticates with.

A key reads ``ffk_<prefix>_<secret>``: the 8-character prefix identifies it in lists and
logs, the secret is 43 URL-safe characters; only ``sha256(key)`` is stored.

Lookups are cached in Django's cache (Redis in production, shared by every process) for
``API_KEY_CACHE_SECONDS`` and in the process for ``API_KEY_LOCAL_CACHE_SECONDS`` (2 s).
Revoking or expiring a key, and deactivating or re-roling the user it is bound to, rewrite its
shared entry on commit from the committed row (``refresh``), so every process refuses it within
``API_KEY_LOCAL_CACHE_SECONDS`` of the commit (the committing process at once). The entry is
rewritten rather than deleted, and a lookup only ``add``s what it read: a lookup that read the
row just before the commit cannot put the old state back after it.

``last_used_at`` is kept to the minute without a database write per request: a process
remembers when it last touched a key, and the first process in a minute to win the
cache's ``add`` latch (``ff:apikey:touch:<id>``, 60 s) runs one conditional
``UPDATE ... WHERE last_used_at < now - 60 s``. At most one write per key per minute for
the whole cluster, and no periodic job to run or forget.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db.models import Q
from django.utils import timezone

from accounts.codes import KeyCode
from accounts.models import ApiKey

KEY_RE = re.compile(r"^ffk_([a-z0-9]{8})_([A-Za-z0-9_-]{20,128})$")
# How people name a key: its prefix, as lists show it (``ffk_abcd1234``, ``ffk_abcd1234_…``) or bare.
PREFIX_RE = re.compile(r"^(?:ffk_)?([a-z0-9]{8})(?:_.*)?$")
_PREFIX_ALPHABET = string.ascii_lowercase + string.digits
_CACHE_PREFIX = "ff:apikey"
TOUCH_INTERVAL_SECONDS = 60


def new_key() -> tuple[str, str]:
    """A fresh key and its prefix."""
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(8))
    return f"ffk_{prefix}_{secrets.token_urlsafe(32)}", prefix


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def parse_prefix(text: str) -> str | None:
    """The 8-character prefix in ``abcd1234``, ``ffk_abcd1234`` or ``ffk_abcd1234_...``; None if none."""
    found = PREFIX_RE.match(text.strip()) if isinstance(text, str) else None
    return found.group(1) if found else None


@dataclass(frozen=True)
class KeyInfo:
    """What authentication needs to know about a key, small enough to cache."""

    id: int
    name: str
    prefix: str
    role: str
    user_id: int | None
    roles: frozenset[str]
    rate_limit_per_min: int
    is_active: bool
    revoked: bool
    expires_at: datetime | None
    # Who made the key: the two-person rule counts them as the key's person (Actor.person_ids).
    # Defaulted, so that entries cached before the field existed still load.
    created_by_id: int | None = None

    def refusal(self, now: datetime | None = None) -> tuple[str, str] | None:
        """(code, message) when the key may not be used now, else None."""
        if self.revoked:
            return KeyCode.API_KEY_REVOKED, f"API key ffk_{self.prefix} was revoked"
        if not self.is_active:
            return KeyCode.API_KEY_INACTIVE, f"API key ffk_{self.prefix} is inactive"
        if self.expires_at is not None and self.expires_at <= (now or timezone.now()):
            return KeyCode.API_KEY_EXPIRED, f"API key ffk_{self.prefix} expired at {self.expires_at:%Y-%m-%d %H:%M} UTC"
        return None

    def as_model(self) -> ApiKey:
        """An unsaved stand-in for ``request.api_key`` (``Actor`` reads pk, name, role, user, created_by_id)."""
        key = ApiKey(name=self.name, key_prefix=self.prefix, role=self.role, user_id=self.user_id,
                     rate_limit_per_min=self.rate_limit_per_min, expires_at=self.expires_at,
                     created_by_id=self.created_by_id)
        key.pk = self.id
        key._state.adding = False
        return key


def _cache_key(key_hash: str) -> str:
    return f"{_CACHE_PREFIX}:{key_hash}"


def info_for(key: ApiKey) -> KeyInfo:
    roles: frozenset[str] = frozenset({key.role})
    active = key.is_active
    if key.user_id is not None:
        user: Any = key.user
        roles = frozenset(user.groups.values_list("name", flat=True))
        if user.is_superuser:
            roles = roles | {"ADMIN"}
        active = active and user.is_active
    return KeyInfo(
        id=key.pk,
        name=key.name,
        prefix=key.key_prefix,
        role=key.role,
        user_id=key.user_id,
        roles=roles,
        rate_limit_per_min=key.rate_limit_per_min,
        is_active=active,
        revoked=key.revoked_at is not None,
        expires_at=key.expires_at,
        created_by_id=key.created_by_id,
    )


_MISSING = "missing"


# A second, per-process level for the hot paths: a key seen in the last
# API_KEY_LOCAL_CACHE_SECONDS (default 2 s) is not looked up again. Revoking drops it here and
# rewrites the shared entry on commit (``refresh``); other processes follow within those seconds.
_local: dict[str, tuple[float, KeyInfo | str]] = {}


def cached_lookup(raw: str) -> KeyInfo | str | None:
    """From the caches only: the key's info, ``"missing"`` (known not to exist), or None (ask the DB)."""
    if not KEY_RE.match(raw):
        return _MISSING
    key_hash = hash_key(raw)
    now = time.monotonic()
    memo = _local.get(key_hash)
    if memo is not None and memo[0] > now:
        return memo[1]
    found: KeyInfo | str | None = cache.get(_cache_key(key_hash))
    if found is not None:
        if len(_local) > 10000:
            _local.clear()
        _local[key_hash] = (now + settings.API_KEY_LOCAL_CACHE_SECONDS, found)
    return found


def lookup(raw: str) -> KeyInfo | None:
    """The key's info (cache first, then the database); None when there is no such key."""
    found = cached_lookup(raw)
    if isinstance(found, KeyInfo):
        return found
    if found == _MISSING:
        return None
    return load(raw)


def load(raw: str) -> KeyInfo | None:
    """Read the key from the database and cache the answer (a miss for a shorter time).

    ``add``, not ``set``: if a revocation committed after this read, its ``refresh`` wrote
    the newer state already, and this older one must not replace it."""
    key_hash = hash_key(raw)
    key = ApiKey.objects.select_related("user").filter(key_hash=key_hash).first()
    if key is None:
        cache.add(_cache_key(key_hash), _MISSING, timeout=settings.API_KEY_CACHE_SECONDS // 4 or 1)
        return None
    info = info_for(key)
    cache.add(_cache_key(key_hash), info, timeout=settings.API_KEY_CACHE_SECONDS)
    return info


def forget(key_hash: str) -> None:
    _local.pop(key_hash, None)
    cache.delete(_cache_key(key_hash))


def refresh(*key_hashes: str) -> None:
    """After a commit that changed what these keys may do: cache their committed state.

    Written over whatever the shared cache holds, so a lookup racing the commit cannot leave
    the old state there; other processes read it once their 2 s local entry ends."""
    for key_hash in key_hashes:
        _local.pop(key_hash, None)
    for key in ApiKey.objects.select_related("user").filter(key_hash__in=key_hashes):
        cache.set(_cache_key(key.key_hash), info_for(key), timeout=settings.API_KEY_CACHE_SECONDS)


def refresh_for_user(user_id: int) -> None:
    """``refresh`` every key bound to the user (deactivated, or roles changed)."""
    hashes = list(ApiKey.objects.filter(user_id=user_id).values_list("key_hash", flat=True))
    if hashes:
        refresh(*hashes)


# -- last_used_at --------------------------------------------------------------------------

_touched: dict[int, float] = {}


def touch_due(info: KeyInfo) -> bool:
    """Whether this request should write last_used_at (cache only; True about once a minute per key)."""
    now = time.monotonic()
    last = _touched.get(info.id)
    if last is not None and now - last < TOUCH_INTERVAL_SECONDS:
        return False
    _touched[info.id] = now
    return bool(cache.add(f"{_CACHE_PREFIX}:touch:{info.id}", 1, timeout=TOUCH_INTERVAL_SECONDS))


def touch_write(key_id: int) -> None:
    now = timezone.now()
    ApiKey.objects.filter(pk=key_id).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - timedelta(seconds=TOUCH_INTERVAL_SECONDS))
    ).update(last_used_at=now)


def forget_local() -> None:
    _touched.clear()
    _local.clear()


def describe(key: ApiKey) -> dict[str, Any]:
    """The key as the audit shows it: never the secret, never the hash."""
    return {
        "name": key.name,
        "prefix": key.key_prefix,
        "role": key.role,
        "user": key.user.get_username() if key.user is not None else None,
        "rate_limit_per_min": key.rate_limit_per_min,
        "is_active": key.is_active,
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
    }
