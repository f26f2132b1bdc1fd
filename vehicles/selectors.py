"""Reads of the vehicle registry, and the vehicle cache the hot API paths use.

``targeting(vin)`` / ``atargeting(vin)`` give a registered vehicle's environment and
targeting attributes (``{"environment", "model", "sw_version", "region"}``) or None, from
two cache levels: this process (``LOCAL_SECONDS``) and the shared cache (Redis in
production, ``CACHE_SECONDS``); the database only on a miss. Unknown VINs are remembered
too, for a shorter time, so a flood of random VINs never reaches the database.
``vehicles.services`` forgets a vehicle on commit of every change to it.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.cache import cache

from core.http.threads import db
from vehicles.models import Vehicle

CACHE_SECONDS = 300
MISSING_SECONDS = 60
# Per process, a vehicle read in the last LOCAL_SECONDS is not read again.
LOCAL_SECONDS = 30.0
_LOCAL_LIMIT = 50000
_MISSING = "missing"
_local: dict[str, tuple[float, Any]] = {}


def _cache_key(vin: str) -> str:
    return f"ff:vehicle:{vin}"


def _load(vin: str) -> dict[str, str] | None:
    vehicle = Vehicle.objects.filter(vin=vin).only("vin", "environment", "model", "sw_version", "region").first()
    data = None if vehicle is None else {"environment": vehicle.environment, **vehicle.context()}
    cache.set(_cache_key(vin), data or _MISSING, timeout=CACHE_SECONDS if data else MISSING_SECONDS)
    return data


def _remember(vin: str, found: Any) -> None:
    if len(_local) > _LOCAL_LIMIT:
        _local.clear()
    _local[vin] = (time.monotonic() + LOCAL_SECONDS, found)


def _answer(found: Any) -> dict[str, str] | None:
    return None if found == _MISSING else dict(found)


async def atargeting(vin: str) -> dict[str, str] | None:
    """The registered vehicle's environment and targeting attributes, or None (async views)."""
    memo = _local.get(vin)
    if memo is not None and memo[0] > time.monotonic():
        return _answer(memo[1])
    found = cache.get(_cache_key(vin))
    if found is None:
        found = await db(_load)(vin) or _MISSING
    _remember(vin, found)
    return _answer(found)


def targeting(vin: str) -> dict[str, str] | None:
    """As ``atargeting``, for sync callers (OFREP, the admin)."""
    memo = _local.get(vin)
    if memo is not None and memo[0] > time.monotonic():
        return _answer(memo[1])
    found = cache.get(_cache_key(vin))
    if found is None:
        found = _load(vin) or _MISSING
    _remember(vin, found)
    return _answer(found)


def local_environment(vin: str) -> str | None:
    """The vehicle's environment from this process's memory only (None: unknown or not held):
    the lane's steady-state 304 answers without any other read."""
    memo = _local.get(vin)
    if memo is None or memo[0] <= time.monotonic() or memo[1] == _MISSING:
        return None
    environment: str = memo[1]["environment"]
    return environment


def forget(vin: str) -> None:
    """The next read of this vehicle goes to the database (other processes within LOCAL_SECONDS)."""
    _local.pop(vin, None)
    cache.delete(_cache_key(vin))


def forget_local() -> None:
    _local.clear()
