"""Which vehicles are online: shared by every server process (Redis; in memory embedded).

The vehicle sockets (``realtime.presence``) write here in batches: a heartbeat never costs a
write of its own. A vehicle counts as online while its socket is open and its process keeps
refreshing it; a process that dies stops refreshing, and after ``PRESENCE_TIMEOUT_SECONDS``
any process's sweep (``expire``) takes its vehicles offline.
"""

from __future__ import annotations

import time

from django.conf import settings

from core import redis


def _key(environment: str) -> str:
    return f"{settings.PUSH_PREFIX}:online:{environment}"


def _holders_key() -> str:
    return f"{settings.PUSH_PREFIX}:holders"


def seen(by_environment: dict[str, dict[str, float]], holders: dict[str, str]) -> None:
    """``by_environment``: environment -> {VIN: last seen (epoch seconds)}; ``holders``: VIN ->
    the connection id that now holds it (on connect)."""
    keys = {environment: _key(environment) for environment in by_environment}
    redis.presence_seen(keys, _holders_key(), by_environment, holders)


def leave(environment: str, vin: str, holder: str) -> bool:
    """The connection ``holder`` closed: True when the vehicle is now offline (no newer
    connection of it, on any process, took over)."""
    return redis.presence_leave(_key(environment), _holders_key(), vin, holder)


def online_count(environment: str) -> int:
    return redis.presence_count(_key(environment), time.time() - float(settings.PRESENCE_TIMEOUT_SECONDS))


def expire(environment: str) -> list[str]:
    """The VINs not refreshed within the timeout, now removed: they are offline."""
    return redis.presence_expire(_key(environment), _holders_key(),
                                 time.time() - float(settings.PRESENCE_TIMEOUT_SECONDS))
