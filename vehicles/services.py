"""Writes to the vehicle registry. Every writer forgets the vehicle from the caches on
commit (``vehicles.selectors``), so evaluation never targets a vehicle by attributes it
no longer has for longer than the per-process cache time."""

from __future__ import annotations

from typing import Any

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


def vehicle_presence_flush(*, updates: list[dict[str, Any]]) -> int:
    """Write what the vehicle sockets saw, in one batch (never one write per heartbeat).

    Each update: ``{"vin", "status" ("online"|"offline"), "last_seen_at" (aware datetime),
    "agent" (telemetry dict or None)}``; telemetry fields are ``agent_version``,
    ``agent_memory_mb``, ``agent_cpu_percent``, ``cache_size_mb``. Presence is not a
    targeting attribute, so the vehicle caches are not dropped. Rows changed."""
    if not updates:
        return 0
    latest: dict[str, dict[str, Any]] = {}
    for update in updates:
        latest[update["vin"]] = {**latest.get(update["vin"], {}), **{k: v for k, v in update.items() if v is not None}}
    vehicles = {v.vin: v for v in Vehicle.objects.filter(vin__in=latest)}
    fields = {"status", "last_seen_at"}
    for vin, update in latest.items():
        vehicle = vehicles.get(vin)
        if vehicle is None:
            continue
        vehicle.status = update.get("status", vehicle.status)
        vehicle.last_seen_at = update.get("last_seen_at", vehicle.last_seen_at)
        for name, value in (update.get("agent") or {}).items():
            if name in TELEMETRY_FIELDS:
                setattr(vehicle, name, value)
                fields.add(name)
    changed = [vehicles[vin] for vin in latest if vin in vehicles]
    Vehicle.objects.bulk_update(changed, sorted(fields), batch_size=500)
    return len(changed)


TELEMETRY_FIELDS = ("agent_version", "agent_memory_mb", "agent_cpu_percent", "cache_size_mb")
