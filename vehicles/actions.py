"""The audit actions of the vehicle registry, with the labels people read. ``audit`` stores
the value; it knows no domain."""

from __future__ import annotations

from django.db import models


class VehicleAction(models.TextChoices):
    REGISTER_VEHICLE = "REGISTER_VEHICLE", "Vehicle registered"
    UPDATE_VEHICLE = "UPDATE_VEHICLE", "Vehicle updated"
    # A token for a vehicle that had none (registered without one, or revoked): nothing replaced.
    ISSUE_VEHICLE_TOKEN = "ISSUE_VEHICLE_TOKEN", "Vehicle token issued"
    # A new token replacing a live one, which stops working in the same commit.
    ROTATE_VEHICLE_TOKEN = "ROTATE_VEHICLE_TOKEN", "Vehicle token rotated"
    REVOKE_VEHICLE_TOKEN = "REVOKE_VEHICLE_TOKEN", "Vehicle token revoked"
