"""The vehicle credential check the websocket runs on connect: 4401 / 4403, one query, no cache."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from core.actors import Actor
from vehicles import services, tokens
from vehicles.models import Vehicle
from vehicles.selectors import (
    CLOSE_FORBIDDEN,
    CLOSE_UNAUTHENTICATED,
    VehicleRefused,
    avehicle_for_token,
    vehicle_for_token,
)

pytestmark = pytest.mark.django_db

VIN = "KMHAB81CBLU000001"
OTHER = "KMHAB81CBLU000002"
SYSTEM = Actor.for_system("tests")


@pytest.fixture
def token() -> str:
    _, raw = services.vehicle_register(actor=SYSTEM, vin=VIN, model="ev6", sw_version="2.9.1", region="eu-west")
    services.vehicle_register(actor=SYSTEM, vin=OTHER, model="ev6", sw_version="2.9.1", region="eu-west")
    return raw


def refusal(vin: Any, raw: Any) -> tuple[int, str]:
    with pytest.raises(VehicleRefused) as refused:
        vehicle_for_token(vin, raw)
    assert isinstance(refused.value, Exception) and str(refused.value) == refused.value.reason
    return refused.value.close_code, refused.value.reason


def test_vehicle_for_token__own_vin__the_vehicle_in_one_query(token: str) -> None:
    # When the vehicle's own token opens its own VIN
    with CaptureQueriesContext(connection) as queries:
        vehicle = vehicle_for_token(VIN, token)
    # Then the vehicle comes back from one query by the token's hash
    assert (vehicle.vin, vehicle.environment, vehicle.model) == (VIN, "production", "ev6")
    assert len(queries) == 1
    assert "token_hash" in queries[0]["sql"]


def test_vehicle_for_token__lower_case_vin__same_vehicle(token: str) -> None:
    assert vehicle_for_token(VIN.lower(), token).vin == VIN


def test_vehicle_for_token__token_of_another_vin__4403(token: str) -> None:
    assert refusal(OTHER, token) == (CLOSE_FORBIDDEN, "this token belongs to another vehicle") == (
        4403, "this token belongs to another vehicle")


@pytest.mark.parametrize("vin", ["", "not-a-vin", "KMHAB81CBLU00000\x00", "K" * 100_000, None, 17, "\uff2bMHAB81CBLU000001"])
def test_vehicle_for_token__valid_token_garbage_vin__4403(token: str, vin: Any) -> None:
    assert refusal(vin, token)[0] == 4403


def test_vehicle_for_token__unknown_well_formed_token__4401_after_one_query(token: str) -> None:
    with CaptureQueriesContext(connection) as queries:
        assert refusal(VIN, tokens.new_token()) == (CLOSE_UNAUTHENTICATED, "unknown vehicle token")
    assert len(queries) == 1


@pytest.mark.parametrize("raw", [
    None, "", 42, b"ffv_" + b"a" * 43, ["ffv_"],
    "ffv_",
    "ffk_" + "a" * 43,  # an API key's prefix
    "FFV_" + "a" * 43,
    "ffv_" + "a" * 42,
    "ffv_" + "a" * 44,
    "ffv_" + "a" * 42 + "=",
    "ffv_" + "a" * 42 + "\x00",
    "ffv_" + "a" * 42 + "é",
    "ffv_" + "a" * 42 + "\udcff",  # a lone surrogate (undecodable bytes in a URL)
    "ffv_" + "a" * 42 + "\n",
    " ffv_" + "a" * 43,
    "Bearer ffv_" + "a" * 43,
    "ffv_" + "a" * 10_000_000,
])
def test_vehicle_for_token__malformed__4401_without_a_query(token: str, raw: Any) -> None:
    # Given a token that cannot be one (wrong type, prefix, length or alphabet, NUL, non-ASCII, huge)
    # When it is checked, then it is refused before any hashing or database query
    with CaptureQueriesContext(connection) as queries:
        assert refusal(VIN, raw) == (4401, "missing or malformed vehicle token")
    assert len(queries) == 0


def test_vehicle_for_token__own_token_with_trailing_newline__4401(token: str) -> None:
    # ``$`` in a regex accepts a trailing newline; the token check must not
    assert refusal(VIN, token + "\n")[0] == 4401


def test_vehicle_for_token__revoked__4401_at_once_even_for_another_vin(token: str) -> None:
    # Given a token that opened its vehicle
    assert vehicle_for_token(VIN, token).vin == VIN
    # When it is revoked, then the very next check refuses it (no cache), whatever VIN it asks for
    services.vehicle_token_revoke(actor=SYSTEM, vin=VIN)
    assert refusal(VIN, token) == (4401, "this vehicle token was revoked")
    assert refusal(OTHER, token)[0] == 4401


def test_vehicle_for_token__rotated__old_4401_new_opens(token: str) -> None:
    new = services.vehicle_token_rotate(actor=SYSTEM, vin=VIN)
    assert refusal(VIN, token) == (4401, "unknown vehicle token")
    assert vehicle_for_token(VIN, new).vin == VIN


def test_vehicle_for_token__vehicle_without_token__nothing_opens_it(token: str) -> None:
    # Given a vehicle registered without a token (NULL hash) next to others
    services.vehicle_upsert(vin="KMHAB81CBLU000003", model="ev6", sw_version="2.9.1", region="eu-west")
    Vehicle.objects.filter(vin=OTHER).update(token_hash=None)
    # Then no token, the empty one included, opens it
    assert refusal("KMHAB81CBLU000003", "")[0] == 4401
    assert refusal("KMHAB81CBLU000003", token)[0] == 4403


def test_token_hash__unique__two_vehicles_cannot_share_one(token: str) -> None:
    from django.db import IntegrityError, transaction

    with pytest.raises(IntegrityError), transaction.atomic():
        Vehicle.objects.filter(vin=OTHER).update(token_hash=tokens.hash_token(token))


def test_avehicle_for_token__async__same_answers(committed_db: None) -> None:
    # Given a registered vehicle (committed: the async wrapper runs in another thread)
    _, raw = services.vehicle_register(actor=SYSTEM, vin=VIN, model="ev6", sw_version="2.9.1", region="eu-west")

    async def both() -> tuple[str, int]:
        vehicle = await avehicle_for_token(VIN, raw)
        try:
            await avehicle_for_token(OTHER, raw)
        except VehicleRefused as refused:
            return vehicle.vin, refused.close_code
        return vehicle.vin, 0

    async def close() -> None:
        # The wrapper's thread keeps its connection (CONN_MAX_AGE): close it, or the test
        # database cannot be dropped at the end of the run.
        await database_sync_to_async(connections.close_all)()

    # When it is checked from async code, then the same answers as the sync check
    try:
        assert asyncio.run(both()) == (VIN, 4403)
    finally:
        asyncio.run(close())
