"""The registry's doors: registration, token rotation and revocation, upsert — audited, hash only."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from audit.models import AuditEntry
from audit.services import verify_chain
from core.actors import Actor
from core.errors import Conflict, NotFound, PermissionDenied
from tests.factories import VehicleFactory, actor
from vehicles import selectors, services
from vehicles.actions import VehicleAction
from vehicles.models import Vehicle

pytestmark = pytest.mark.django_db

VIN = "KMHAB81CBLU000001"
SYSTEM = Actor.for_system("tests")


def register(vin: str = VIN, **fields: Any) -> tuple[Vehicle, str]:
    who = fields.pop("actor", SYSTEM)
    args = {"model": "ev6", "sw_version": "2.9.1", "region": "eu-west", **fields}
    return services.vehicle_register(actor=who, vin=vin, **args)


def vehicle_entries() -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(object_type="vehicle").order_by("seq"))


def test_register__valid__stores_hash_not_token_and_audits_once() -> None:
    # Given an ADMIN user
    admin = actor("ADMIN")
    # When they register a vehicle (VIN in lower case, environment staging)
    vehicle, token = services.vehicle_register(actor=admin, vin=VIN.lower(), model="ev6", sw_version="2.9.1",
                                               region="eu-west", environment="staging")
    # Then the VIN is upper-cased, only the token's SHA-256 is stored, and one entry records it
    stored = Vehicle.objects.get()
    assert (stored.vin, stored.environment, vehicle.vin) == (VIN, "staging", VIN)
    assert token.startswith("ffv_") and len(token) == 47
    assert stored.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert stored.token_issued_at is not None and stored.token_revoked_at is None
    [entry] = vehicle_entries()
    assert (entry.action, entry.object_id, entry.actor, entry.before) == (
        VehicleAction.REGISTER_VEHICLE, VIN, "admin-user", None)
    assert entry.after["token"] == "active" and entry.after["environment"] == "staging"
    assert token not in str(entry.after) and stored.token_hash not in str(entry.after)
    assert verify_chain().ok


def test_register__vin_with_blanks_and_lower_case__normalised() -> None:
    vehicle, _ = register(f"  {VIN.lower()}\n")
    assert vehicle.vin == VIN == Vehicle.objects.get().vin


def test_register__twice__conflict_and_nothing_changed() -> None:
    # Given a registered vehicle
    _, token = register()
    # When the same VIN is registered again (any case)
    with pytest.raises(Conflict) as refused:
        register(VIN.lower(), model="gv60")
    # Then 409 vehicle_exists, the first token still works, and no second entry is written
    assert (refused.value.code, refused.value.status) == ("vehicle_exists", 409)
    assert selectors.vehicle_for_token(VIN, token).model == "ev6"
    assert len(vehicle_entries()) == 1


@pytest.mark.parametrize(("field", "value"), [
    ("vin", "KMHAB81CBLU00000I"),  # I is not a VIN letter
    ("vin", "KMHAB81CBLU00001"),  # 16 characters
    ("vin", "KMHAB81CBLU0000011"),
    ("vin", "\uff2bMHAB81CBLU000001"),  # a fullwidth K
    ("vin", "KMHAB81CBLU00000\x00"),
    ("vin", "KMHAB81C LU000001"),
    ("vin", None),
    ("vin", 12345678901234567),
    ("model", ""),
    ("model", "x" * 101),
    ("model", "ev\x006"),
    ("region", "eu\nwest"),
    ("region", ["eu-west"]),
    ("sw_version", "latest"),
    ("sw_version", "2.9.1\x00"),
    ("sw_version", "1" * 65),
    ("environment", "prod"),
    ("environment", None),
])
def test_register__bad_field__validation_error_naming_it_and_nothing_written(field: str, value: Any) -> None:
    # When a field is invalid, then the error names it, and nothing is stored or audited
    with pytest.raises(ValidationError) as refused:
        register(**{field: value}) if field != "vin" else register(value)
    assert field in refused.value.message_dict
    assert not Vehicle.objects.exists() and not vehicle_entries()


@pytest.mark.parametrize("role", ["READ", "WRITE", "SAFETY"])
def test_doors__not_admin__permission_denied_and_nothing_changed(role: str) -> None:
    # Given a vehicle with a token, and a user without ADMIN
    _, token = register()
    user = actor(role)
    # When they register, rotate or revoke, then each is refused and nothing changes
    with pytest.raises(PermissionDenied):
        register("KMHAB81CBLU000002", actor=user)
    with pytest.raises(PermissionDenied):
        services.vehicle_token_rotate(actor=user, vin=VIN)
    with pytest.raises(PermissionDenied):
        services.vehicle_token_revoke(actor=user, vin=VIN)
    with pytest.raises(PermissionDenied):
        services.vehicle_upsert(actor=user, vin=VIN, model="x", sw_version="1.0.0", region="r")
    assert selectors.vehicle_for_token(VIN, token).vin == VIN
    assert Vehicle.objects.count() == 1 and len(vehicle_entries()) == 1


def test_rotate__live_token__old_refused_new_works_audited_as_rotation() -> None:
    # Given a registered vehicle and its token
    _, old = register()
    # When the token is rotated
    new = services.vehicle_token_rotate(actor=actor("ADMIN"), vin=VIN.lower())
    # Then the old token opens nothing, the new one opens the vehicle, and the rotation is recorded
    assert new != old
    with pytest.raises(selectors.VehicleRefused) as refused:
        selectors.vehicle_for_token(VIN, old)
    assert refused.value.close_code == 4401
    assert selectors.vehicle_for_token(VIN, new).vin == VIN
    entry = vehicle_entries()[-1]
    assert entry.action == VehicleAction.ROTATE_VEHICLE_TOKEN
    assert entry.before["token_issued_at"] != entry.after["token_issued_at"]
    assert new not in str(entry.after) and old not in str(entry.before)


def test_rotate__revoked_or_none__issues_and_audits_as_issue() -> None:
    # Given a vehicle whose token was revoked, and one registered without a token
    _, old = register()
    services.vehicle_token_revoke(actor=SYSTEM, vin=VIN)
    services.vehicle_upsert(vin="KMHAB81CBLU000002", model="ev6", sw_version="2.9.1", region="eu-west")
    # When each gets a token
    first = services.vehicle_token_rotate(actor=SYSTEM, vin=VIN)
    second = services.vehicle_token_rotate(actor=SYSTEM, vin="KMHAB81CBLU000002")
    # Then both work, the revoked one stays dead, and both are recorded as issued
    assert selectors.vehicle_for_token(VIN, first).token_revoked_at is None
    assert selectors.vehicle_for_token("KMHAB81CBLU000002", second).vin == "KMHAB81CBLU000002"
    with pytest.raises(selectors.VehicleRefused):
        selectors.vehicle_for_token(VIN, old)
    assert [e.action for e in vehicle_entries()[-2:]] == [VehicleAction.ISSUE_VEHICLE_TOKEN] * 2


def test_revoke__live_token__refused_at_once_and_audited() -> None:
    # Given a vehicle and its token
    _, token = register()
    # When the token is revoked
    vehicle = services.vehicle_token_revoke(actor=actor("ADMIN"), vin=VIN)
    # Then it opens nothing (4401, revoked), the hash stays on record, and the revocation is audited
    assert vehicle.token_revoked_at is not None and vehicle.token_state == "revoked"
    with pytest.raises(selectors.VehicleRefused) as refused:
        selectors.vehicle_for_token(VIN, token)
    assert (refused.value.close_code, refused.value.reason) == (4401, "this vehicle token was revoked")
    entry = vehicle_entries()[-1]
    assert (entry.action, entry.before["token"], entry.after["token"]) == (
        VehicleAction.REVOKE_VEHICLE_TOKEN, "active", "revoked")


def test_revoke__already_revoked_or_none__conflict_and_no_entry() -> None:
    # Given a revoked token, and a vehicle that never had one
    register()
    services.vehicle_token_revoke(actor=SYSTEM, vin=VIN)
    VehicleFactory(vin="KMHAB81CBLU000002")
    count = len(vehicle_entries())
    # When either is revoked (again), then 409 no_vehicle_token and nothing is recorded
    for vin in (VIN, "KMHAB81CBLU000002"):
        with pytest.raises(Conflict) as refused:
            services.vehicle_token_revoke(actor=SYSTEM, vin=vin)
        assert refused.value.code == "no_vehicle_token"
    assert len(vehicle_entries()) == count


@pytest.mark.parametrize("vin", ["KMHAB81CBLU000009", "not-a-vin", "", "\x00" * 17, "K" * 10_000])
def test_rotate_and_revoke__unknown_or_garbage_vin__not_found(vin: str) -> None:
    register()
    with pytest.raises(NotFound):
        services.vehicle_token_rotate(actor=SYSTEM, vin=vin)
    with pytest.raises(NotFound):
        services.vehicle_token_revoke(actor=SYSTEM, vin=vin)
    assert len(vehicle_entries()) == 1


def test_register__revoked_api_key_actor__refused() -> None:
    # Given an ADMIN key that was revoked after the actor was built (a cached key)
    from accounts.services import api_key_create, api_key_revoke

    key, _ = api_key_create(actor=SYSTEM, name="ops", role="ADMIN")
    stale = Actor.for_api_key(key)
    api_key_revoke(actor=SYSTEM, api_key=key)
    # When it registers a vehicle, then it is refused and nothing is stored
    with pytest.raises(PermissionDenied):
        register(actor=stale)
    assert not Vehicle.objects.exists()


def test_upsert__new_changed_unchanged__audited_only_when_something_changes(on_commit: Any) -> None:
    # Given nothing registered
    # When a vehicle is upserted, then upserted with new attributes, then with the same again
    with on_commit():
        created = services.vehicle_upsert(vin=VIN, model="ev6", sw_version="2.9.1", region="eu-west")
    assert created.token_state == "none"
    services.vehicle_upsert(vin=VIN, model="ev6", sw_version="3.0.0", region="us-east", environment="staging")
    services.vehicle_upsert(vin=VIN, model="ev6", sw_version="3.0.0", region="us-east", environment="staging")
    # Then one entry for the registration and one for the change, none for the repeat
    entries = vehicle_entries()
    assert [e.action for e in entries] == [VehicleAction.REGISTER_VEHICLE, VehicleAction.UPDATE_VEHICLE]
    assert (entries[1].before["sw_version"], entries[1].after["sw_version"]) == ("2.9.1", "3.0.0")
    assert entries[0].actor == "system:vehicles.vehicle_upsert"
    assert Vehicle.objects.get().context() == {"model": "ev6", "sw_version": "3.0.0", "region": "us-east"}


def test_register__vin_remembered_unknown__forgotten_on_commit(on_commit: Any) -> None:
    # Given an evaluation that remembered the VIN as unknown
    assert selectors.targeting(VIN) is None
    # When it is registered (and the transaction commits)
    with on_commit():
        register()
    # Then the next read sees the vehicle
    assert selectors.targeting(VIN) == {"environment": "production", "model": "ev6", "sw_version": "2.9.1",
                                        "region": "eu-west"}


def test_register__audit_fails__nothing_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an audit that fails
    from audit import services as audit

    def broken(**kwargs: Any) -> None:
        raise RuntimeError("audit down")

    monkeypatch.setattr(audit, "record", broken)
    # When a vehicle is registered, then the failure undoes the registration
    with pytest.raises(RuntimeError):
        register()
    assert not Vehicle.objects.exists()
