"""Writes to the vehicle registry. Every writer forgets the vehicle from the caches on
commit (``vehicles.selectors``), so evaluation never targets a vehicle by attributes it
no longer has for longer than the per-process cache time."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from core.transactions import after_commit
from vehicles import selectors
from vehicles.models import Vehicle


def vehicle_upsert(*, vin: str, model: str, sw_version: str, region: str, environment: str = "production") -> Vehicle:
    """Register the vehicle, or bring its targeting attributes up to date."""
    with transaction.atomic():
        vehicle = Vehicle.objects.select_for_update().filter(vin=vin).first()
        if vehicle is None:
            vehicle = Vehicle(vin=vin)
        vehicle.model, vehicle.sw_version, vehicle.region = model, sw_version, region
        vehicle.environment = environment
        vehicle.updated_at = timezone.now()
        vehicle.full_clean()
        vehicle.save()
        after_commit(selectors.forget, vin)
    return vehicle
