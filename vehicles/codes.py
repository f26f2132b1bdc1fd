"""Error codes of the vehicle registry (see ``core.errors`` for the scheme)."""

from __future__ import annotations

from core.errors import CodeEnum, set_statuses


class VehicleCode(CodeEnum):
    VEHICLE_EXISTS = "vehicle_exists"  # registering a VIN that is registered (re-issue: rotate the token)
    NO_VEHICLE_TOKEN = "no_vehicle_token"  # revoking where no live token is left (none, or revoked already)


set_statuses(VehicleCode, {"vehicle_exists": 409, "no_vehicle_token": 409})
