"""Writes to the vehicle registry: registration, the per-vehicle token, targeting attributes.

Every change has one shape: validate, check who may (ADMIN; the command line is a system actor
with ADMIN), then one transaction that locks the row, writes, and records the audit entry
(``VehicleAction``). Writers that change what evaluation targets forget the vehicle from the
caches on commit (``vehicles.selectors``).

Tokens (``vehicles.tokens``): only their SHA-256 is stored; the token is returned once, by
``vehicle_register`` and ``vehicle_token_rotate``, and appears in no audit entry, log or GET.
Rotating replaces the hash and revoking stamps ``token_revoked_at`` in the same commit, and
``selectors.vehicle_for_token`` reads the row itself (no cache): the old token opens nothing
from that commit on, in every process. Connections opened before stay up until the websocket
layer closes them.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.services import actor_check_current
from agent_client.rules import VIN_RE
from agent_client.semver import SemverError, parse_version
from audit import services as audit
from core.actors import ROLE_ADMIN, Actor
from core.environments import Environment
from core.errors import Conflict, NotFound, PermissionDenied
from core.transactions import after_commit
from vehicles import selectors, tokens
from vehicles.actions import VehicleAction
from vehicles.codes import VehicleCode
from vehicles.models import Vehicle

ATTRIBUTES = ("model", "sw_version", "region", "environment")
_LENGTHS = {"model": 100, "sw_version": 64, "region": 64}


# -- who may, and what is valid ---------------------------------------------------------------


def may_manage_vehicles(actor: Actor) -> bool:
    """Registering vehicles and handling their tokens: ADMIN (users, keys, the command line)."""
    return actor.has_role(ROLE_ADMIN)


def _require_manager(actor: Actor, what: str) -> None:
    if not may_manage_vehicles(actor):
        raise PermissionDenied(f"{actor.label} may not {what}: it needs the ADMIN role")


def normal_vin(vin: Any) -> str | None:
    """The VIN in upper case without surrounding blanks, or None when it is not a VIN."""
    if not isinstance(vin, str) or len(vin) > 64 or not vin.isascii():
        return None
    vin = vin.strip().upper()
    return vin if VIN_RE.fullmatch(vin) else None


def _text(errors: dict[str, str], name: str, value: Any) -> str:
    if not isinstance(value, str):
        errors[name] = "required, as text"
        return ""
    value = value.strip()
    limit = _LENGTHS[name]
    if not value or len(value) > limit:
        errors[name] = f"1-{limit} characters are required"
    elif not value.isprintable():
        errors[name] = "control characters are not allowed"
    return value


def clean_attributes(*, vin: Any, model: Any, sw_version: Any, region: Any, environment: Any) -> dict[str, str]:
    """The registry fields, normalised; ``ValidationError`` with one message per bad field."""
    errors: dict[str, str] = {}
    clean_vin = normal_vin(vin)
    if clean_vin is None:
        errors["vin"] = "17 characters of A-H, J-N, P, R-Z and 0-9 (no I, O or Q)"
    fields = {name: _text(errors, name, value)
              for name, value in (("model", model), ("sw_version", sw_version), ("region", region))}
    if "sw_version" not in errors:
        try:
            parse_version(fields["sw_version"])
        except SemverError:
            # Targeting compares versions: one that does not parse would never match a range.
            errors["sw_version"] = "a semantic version, like 2.5.0 or 3.0.0-rc.1"
    if not isinstance(environment, str) or environment not in Environment.values:
        errors["environment"] = f"one of {', '.join(Environment.values)}"
    if errors:
        raise ValidationError(errors)
    return {"vin": clean_vin or "", **fields, "environment": environment}


def describe(vehicle: Vehicle) -> dict[str, Any]:
    """The vehicle as the audit shows it: never the token, never its hash."""
    return {
        "vin": vehicle.vin,
        "model": vehicle.model,
        "sw_version": vehicle.sw_version,
        "region": vehicle.region,
        "environment": vehicle.environment,
        "token": vehicle.token_state,
        "token_issued_at": vehicle.token_issued_at.isoformat() if vehicle.token_issued_at else None,
        "token_revoked_at": vehicle.token_revoked_at.isoformat() if vehicle.token_revoked_at else None,
    }


def _record(actor: Actor, action: VehicleAction, vehicle: Vehicle, before: dict[str, Any] | None) -> None:
    audit.record(actor=actor, action=action, object_type="vehicle", object_id=vehicle.vin, before=before,
                 after=describe(vehicle))


def _lock(vin: Any) -> Vehicle:
    clean = normal_vin(vin)
    vehicle = Vehicle.objects.select_for_update().filter(vin=clean).first() if clean else None
    if vehicle is None:
        raise NotFound(f"no vehicle {str(vin)[:64]!r} is registered")
    return vehicle


def _insert(vehicle: Vehicle) -> None:
    # The savepoint keeps the outer transaction usable when a concurrent registration of the
    # same VIN committed first (the primary key refuses the second).
    try:
        with transaction.atomic():
            vehicle.save(force_insert=True)
    except IntegrityError:
        raise Conflict(f"vehicle {vehicle.vin} is registered already", code=VehicleCode.VEHICLE_EXISTS) from None


# -- the doors ---------------------------------------------------------------------------------


def vehicle_register(
    *, actor: Actor, vin: str, model: str, sw_version: str, region: str, environment: str = "production"
) -> tuple[Vehicle, str]:
    """Register a vehicle with a fresh token; returns it with the token, shown once and never stored.

    A VIN registered already is refused (409 ``vehicle_exists``): a new token for it is
    ``vehicle_token_rotate``, new attributes are ``vehicle_upsert``."""
    fields = clean_attributes(vin=vin, model=model, sw_version=sw_version, region=region, environment=environment)
    _require_manager(actor, "register vehicles")
    raw = tokens.new_token()
    with transaction.atomic():
        actor_check_current(actor=actor)
        if Vehicle.objects.filter(vin=fields["vin"]).exists():
            raise Conflict(f"vehicle {fields['vin']} is registered already; to give it a new token, rotate it",
                           code=VehicleCode.VEHICLE_EXISTS)
        now = timezone.now()
        vehicle = Vehicle(**fields, token_hash=tokens.hash_token(raw), token_issued_at=now, created_at=now,
                          updated_at=now)
        vehicle.full_clean(validate_unique=False)
        _insert(vehicle)
        _record(actor, VehicleAction.REGISTER_VEHICLE, vehicle, None)
        # An evaluation may have remembered this VIN as unknown.
        after_commit(selectors.forget, vehicle.vin)
    return vehicle, raw


def vehicle_token_rotate(*, actor: Actor, vin: str) -> str:
    """A new token for the vehicle; the one it had (if any) stops working with this commit.

    Audited as ``ROTATE_VEHICLE_TOKEN`` when a live token is replaced, ``ISSUE_VEHICLE_TOKEN``
    when there was none (registered by ``vehicle_upsert``, or revoked)."""
    _require_manager(actor, "issue vehicle tokens")
    raw = tokens.new_token()
    with transaction.atomic():
        actor_check_current(actor=actor)
        vehicle = _lock(vin)
        before = describe(vehicle)
        action = (VehicleAction.ROTATE_VEHICLE_TOKEN if vehicle.token_state == "active"
                  else VehicleAction.ISSUE_VEHICLE_TOKEN)
        vehicle.token_hash = tokens.hash_token(raw)
        vehicle.token_issued_at = vehicle.updated_at = timezone.now()
        vehicle.token_revoked_at = None
        vehicle.save(update_fields=["token_hash", "token_issued_at", "token_revoked_at", "updated_at"])
        _record(actor, action, vehicle, before)
    return raw


def vehicle_token_revoke(*, actor: Actor, vin: str) -> Vehicle:
    """Revoke the vehicle's token: it opens nothing from this commit on (409 when none is live)."""
    _require_manager(actor, "revoke vehicle tokens")
    with transaction.atomic():
        actor_check_current(actor=actor)
        vehicle = _lock(vin)
        if vehicle.token_state != "active":
            state = "was revoked already" if vehicle.token_state == "revoked" else "has no token"
            raise Conflict(f"vehicle {vehicle.vin} {state}", code=VehicleCode.NO_VEHICLE_TOKEN)
        before = describe(vehicle)
        vehicle.token_revoked_at = vehicle.updated_at = timezone.now()
        vehicle.save(update_fields=["token_revoked_at", "updated_at"])
        _record(actor, VehicleAction.REVOKE_VEHICLE_TOKEN, vehicle, before)
    return vehicle


def vehicle_upsert(
    *, vin: str, model: str, sw_version: str, region: str, environment: str = "production", actor: Actor | None = None
) -> Vehicle:
    """Register the vehicle without a token, or bring its targeting attributes up to date.

    For the demo data, benchmarks and tests (a token: ``vehicle_token_rotate``). Audited
    (``REGISTER_VEHICLE`` / ``UPDATE_VEHICLE``) like every write; without an actor as the
    system. Nothing is written or recorded when nothing changes."""
    actor = actor or Actor.for_system("vehicles.vehicle_upsert")
    fields = clean_attributes(vin=vin, model=model, sw_version=sw_version, region=region, environment=environment)
    _require_manager(actor, "register or change vehicles")
    with transaction.atomic():
        actor_check_current(actor=actor)
        vehicle = Vehicle.objects.select_for_update().filter(vin=fields["vin"]).first()
        if vehicle is None:
            now = timezone.now()
            vehicle = Vehicle(**fields, created_at=now, updated_at=now)
            vehicle.full_clean(validate_unique=False)
            _insert(vehicle)
            _record(actor, VehicleAction.REGISTER_VEHICLE, vehicle, None)
        else:
            changed = [name for name in ATTRIBUTES if getattr(vehicle, name) != fields[name]]
            if not changed:
                return vehicle
            before = describe(vehicle)
            for name in changed:
                setattr(vehicle, name, fields[name])
            vehicle.updated_at = timezone.now()
            vehicle.full_clean(validate_unique=False)
            vehicle.save(update_fields=[*changed, "updated_at"])
            _record(actor, VehicleAction.UPDATE_VEHICLE, vehicle, before)
        after_commit(selectors.forget, vehicle.vin)
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
