"""Reads of the vehicle registry, and the vehicle cache the hot API paths use.

``targeting(vin)`` / ``atargeting(vin)`` give a registered vehicle's environment and
targeting attributes (``{"environment", "model", "sw_version", "region"}``) or None, from
two cache levels: this process (``LOCAL_SECONDS``) and the shared cache (Redis in
production, ``CACHE_SECONDS``); the database only on a miss. Unknown VINs are remembered
too, for a shorter time, so a flood of random VINs never reaches the database.
``vehicles.services`` forgets a vehicle on commit of every change to it.

``vehicle_for_token(vin, token)`` / ``avehicle_for_token`` check a vehicle's credential (the
websocket's connect): one indexed query by the token's SHA-256, never cached, so a revoked or
rotated token opens nothing from the moment its change commits, in every process.
"""

from __future__ import annotations

import hmac
import time
from typing import Any

from channels.db import database_sync_to_async
from django.core.cache import cache

from core.http.threads import db
from vehicles import tokens
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


# -- the vehicle credential ----------------------------------------------------------------

CLOSE_UNAUTHENTICATED = 4401  # no, malformed, unknown, rotated-away or revoked token
CLOSE_FORBIDDEN = 4403  # a valid token of another vehicle


class VehicleRefused(Exception):
    """The credential does not open this VIN: ``close_code`` for the websocket, ``reason`` for people."""

    def __init__(self, close_code: int, reason: str) -> None:
        super().__init__(reason)
        self.close_code = close_code
        self.reason = reason


def vehicle_for_token(vin: str, token: str) -> Vehicle:
    """The vehicle ``token`` belongs to, if it is ``vin`` and the token is live; else ``VehicleRefused``.

    A malformed token is refused before hashing or querying; a well-formed one costs one
    query on the unique ``token_hash`` index. The reasons never echo the token."""
    if not tokens.well_formed(token):
        raise VehicleRefused(CLOSE_UNAUTHENTICATED, "missing or malformed vehicle token")
    token_hash = tokens.hash_token(token)
    try:
        vehicle = Vehicle.objects.get(token_hash=token_hash)
    except Vehicle.DoesNotExist:
        raise VehicleRefused(CLOSE_UNAUTHENTICATED, "unknown vehicle token") from None
    # The database matched the hash already; comparing it again in constant time costs
    # nothing and keeps the decision independent of how the database compares strings.
    if not hmac.compare_digest(vehicle.token_hash or "", token_hash):
        raise VehicleRefused(CLOSE_UNAUTHENTICATED, "unknown vehicle token")
    if vehicle.token_revoked_at is not None:
        raise VehicleRefused(CLOSE_UNAUTHENTICATED, "this vehicle token was revoked")
    # A VIN is no secret: a plain comparison. Upper case, as the registry stores it.
    if not isinstance(vin, str) or vin.upper() != vehicle.vin:
        raise VehicleRefused(CLOSE_FORBIDDEN, "this token belongs to another vehicle")
    return vehicle


_vehicle_for_token_async = database_sync_to_async(vehicle_for_token)


async def avehicle_for_token(vin: str, token: str) -> Vehicle:
    """As ``vehicle_for_token``, for websocket consumers (in Django's sync thread, connections
    looked after by channels); raises ``VehicleRefused``."""
    vehicle: Vehicle = await _vehicle_for_token_async(vin, token)
    return vehicle
