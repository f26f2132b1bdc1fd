"""The vehicle websocket against one real daphne with the embedded defaults (SQLite, no Redis,
the in-process push channel): authentication, SYNC, pushes, acknowledgements, catch-up,
malformed frames, other paths. Data is made through the REST API with an ADMIN key."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from itertools import count
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from agent_client.signing import verify
from tests.realtime.live import Fleet, embedded_server, frame, frame_of, new_vin, nothing_of, vehicle

pytestmark = pytest.mark.live
_keys = count(1)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    yield from embedded_server(Path(tmp_path_factory.mktemp("ws-embedded")))


def key() -> str:
    return f"ws.flag-{next(_keys)}"


async def closed_code(ws_url: str, **kwargs: object) -> int:
    async with connect(ws_url, proxy=None, open_timeout=10, **kwargs) as ws:  # type: ignore[arg-type]
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


def public_keys(fleet: Fleet) -> dict[str, bytes]:
    import base64

    status, body = fleet.api("GET", "/api/v1/signing-keys/")
    assert status == 200
    items = body if isinstance(body, list) else body.get("results", body.get("keys", []))
    return {k["kid"]: base64.urlsafe_b64decode(k["public_key"] + "=" * (-len(k["public_key"]) % 4)) for k in items}


# -- authentication -------------------------------------------------------------------------------


def test_socket__bad_credentials__closed_4401_or_4403(fleet: Fleet) -> None:
    # Given two registered vehicles
    vin, token = fleet.register()
    other_vin, other_token = fleet.register()
    # Then no token, a malformed, an unknown token close 4401; another vehicle's token closes 4403
    assert asyncio.run(closed_code(fleet.ws_url(vin))) == 4401
    assert asyncio.run(closed_code(fleet.ws_url(vin, "not-a-token"))) == 4401
    assert asyncio.run(closed_code(fleet.ws_url(vin, token[:-4] + "AAAA"))) == 4401
    assert asyncio.run(closed_code(fleet.ws_url(vin, other_token))) == 4403
    assert asyncio.run(closed_code(fleet.ws_url(new_vin(), token))) == 4403  # unregistered VIN, valid token
    # And a revoked token closes 4401
    status, _ = fleet.api("DELETE", f"/api/v1/vehicles/{other_vin}/token/")
    assert status in (200, 204)
    assert asyncio.run(closed_code(fleet.ws_url(other_vin, other_token))) == 4401


def test_socket__token_in_header_or_query__sync_on_connect_signed(fleet: Fleet) -> None:
    # Given a vehicle and a flag of its environment
    vin, token = fleet.register()
    flag_key = key()
    fleet.flag(flag_key)
    keys = public_keys(fleet)

    async def scenario() -> None:
        for header in (True, False):
            ws = await vehicle(fleet, vin, token, header=header)
            sync = await frame(ws)
            # Then the first frame is the SYNC of its environment, signed, at the current version
            assert sync["type"] == "SYNC" and sync["environment"] == "production"
            assert flag_key in {f["key"] for f in sync["flags"]}
            assert verify(sync, keys) is True
            assert isinstance(sync["version"], int) and sync["version"] >= 1
            # And a SYNC_REQUEST is answered with a SYNC
            await ws.send(json.dumps({"type": "SYNC_REQUEST", "version": sync["version"]}))
            again = await frame_of(ws, "SYNC")
            assert again["version"] == sync["version"]
            await ws.close()

    asyncio.run(scenario())


def test_socket__revoked_while_connected__disconnected_4401(fleet: Fleet) -> None:
    vin, token = fleet.register()

    async def scenario() -> None:
        ws = await vehicle(fleet, vin, token)
        await frame_of(ws, "SYNC")
        status, _ = await asyncio.to_thread(fleet.api, "DELETE", f"/api/v1/vehicles/{vin}/token/")
        assert status in (200, 204)
        # Then the server closes the open socket within a sweep (PUSH_SWEEP_SECONDS = 1 here)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await frame(ws, 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401

    asyncio.run(scenario())


# -- pushes ------------------------------------------------------------------------------------


def test_kill_switch__several_vehicles__pushed_acked_counted_only_its_environment(fleet: Fleet) -> None:
    # Given three production vehicles and one staging vehicle, connected, and a production flag
    production = [fleet.register() for _ in range(3)]
    staging = fleet.register("staging")
    flag_key = key()
    fleet.flag(flag_key)
    keys = public_keys(fleet)

    async def scenario() -> None:
        sockets = [await vehicle(fleet, vin, token) for vin, token in production]
        other = await vehicle(fleet, *staging)
        for ws in [*sockets, other]:
            await frame_of(ws, "SYNC")
        await asyncio.sleep(0.5)  # presence flushed (PRESENCE_FLUSH_SECONDS = 0.2)
        # When the kill switch is engaged
        status, body = await asyncio.to_thread(fleet.kill, flag_key, "brake noise")
        assert status == 201, body
        # Then each production vehicle gets one signed KILL_SWITCH frame with the version
        frames = [await frame_of(ws, "KILL_SWITCH", flag_key=flag_key) for ws in sockets]
        assert {f["reason"] for f in frames} == {"brake noise"}
        assert len({f["version"] for f in frames}) == 1 and all(verify(f, keys) for f in frames)
        assert body["delivery"]["version"] == frames[0]["version"]
        assert (body["delivery"]["targeted_vehicles"], body["delivery"]["targeted_online"]) == (
            body["delivery"]["targeted_vehicles"], 3)
        # And the staging vehicle gets none
        await nothing_of(other, "KILL_SWITCH", 0.5)
        # When two acknowledge (one of them twice: duplicates are harmless)
        version = frames[0]["version"]
        await sockets[0].send(json.dumps({"type": "ACK", "version": version}))
        await sockets[1].send(json.dumps({"type": "ACK", "version": version}))
        await sockets[1].send(json.dumps({"type": "ACK", "version": version}))
        # Then the event counts three frames sent and two acknowledgements, with their times
        delivery = await asyncio.to_thread(
            fleet.wait_for, lambda: (d := fleet.delivery(flag_key))["acknowledged"] == 2 and d["sent"] == 3 and d,
            10, "2 acks and 3 sent")
        assert {a["vin"] for a in delivery["acks"]["results"]} == {production[0][0], production[1][0]}
        assert all(a["acked_at"] and a["version"] == version for a in delivery["acks"]["results"])
        page = await asyncio.to_thread(fleet.delivery, flag_key, "?ack_limit=1&ack_offset=1")
        assert (page["acks"]["count"], len(page["acks"]["results"])) == (2, 1)
        for ws in [*sockets, other]:
            await ws.close()

    asyncio.run(scenario())


def test_flag_update__rule_change__pushed_with_the_new_version(fleet: Fleet) -> None:
    vin, token = fleet.register()
    flag_key = key()
    fleet.flag(flag_key)

    async def scenario() -> None:
        ws = await vehicle(fleet, vin, token)
        sync = await frame_of(ws, "SYNC")
        # When a rule is added to the flag
        status, body = await asyncio.to_thread(fleet.api, "POST", f"/api/v1/flags/{flag_key}/rules/", {
            "type": "vehicle_whitelist", "conditions": {"vins": [vin]}, "variant": "fleet"})
        assert status == 201, body
        # Then the vehicle gets FLAG_UPDATE with the flag as it now is, at a newer version
        update = await frame_of(ws, "FLAG_UPDATE", flag_key=flag_key)
        assert update["version"] > sync["version"]
        assert [r["type"] for r in update["flag"]["rules"]] == ["vehicle_whitelist"]
        assert "sig" in update and "kid" in update
        await ws.close()

    asyncio.run(scenario())


def test_reconnect__from_an_old_version__missed_kill_switch_then_sync(fleet: Fleet) -> None:
    # Given a vehicle that saw version v and went offline
    vin, token = fleet.register()
    flag_key = key()
    fleet.flag(flag_key)

    async def scenario() -> None:
        ws = await vehicle(fleet, vin, token)
        old = (await frame_of(ws, "SYNC"))["version"]
        await ws.close()
        # When a kill switch is engaged meanwhile
        status, body = await asyncio.to_thread(fleet.kill, flag_key, "recall 26-07")
        assert status == 201
        # Then reconnecting with ?version=v brings the missed KILL_SWITCH, then a fresh SYNC
        ws = await vehicle(fleet, vin, token, version=old)
        first = await frame(ws)
        assert (first["type"], first["flag_key"], first["version"]) == ("KILL_SWITCH", flag_key,
                                                                         body["delivery"]["version"])
        sync = await frame_of(ws, "SYNC")
        assert sync["version"] >= first["version"]
        killed = next(f for f in sync["flags"] if f["key"] == flag_key)
        assert any(r["type"] == "kill_switch" and r["enabled"] for r in killed["rules"])
        # And a SYNC_REQUEST from the old version also names it
        await ws.send(json.dumps({"type": "SYNC_REQUEST", "version": old}))
        assert (await frame(ws))["type"] == "KILL_SWITCH"
        await ws.close()

    asyncio.run(scenario())


# -- hostile input -------------------------------------------------------------------------------


def test_malformed_frames__error_frames__then_a_flood_closes_4400(fleet: Fleet) -> None:
    vin, token = fleet.register()

    async def scenario() -> None:
        ws = await vehicle(fleet, vin, token)
        await frame_of(ws, "SYNC")
        bad = [("not json", "invalid_json"), ("[1,2]", "invalid_frame"), ('{"type":"REBOOT"}', "unknown_type"),
               ('{"type":"ACK","version":"7"}', "invalid_field"), (b"\x00\xff binary", "binary_frame")]
        for payload, code in bad:
            await ws.send(payload)
            error = await frame_of(ws, "ERROR")
            assert error["code"] == code and error["message"]
        # A well-formed frame in between is still served
        await ws.send(json.dumps({"type": "HEARTBEAT", "agent": {"agent_version": "1.2.0", "agent_memory_mb": 8.5}}))
        await ws.send(json.dumps({"type": "SYNC_REQUEST"}))
        await frame_of(ws, "SYNC")
        # More than WS_MALFORMED_LIMIT (5 here) within the window: closed with 4400
        await ws.send("x" * 70_000)  # over WS_MAX_FRAME_BYTES: the sixth malformed frame
        assert (await frame_of(ws, "ERROR"))["code"] == "too_many_malformed_frames"
        with pytest.raises(ConnectionClosed) as closed:
            await frame(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400

    asyncio.run(scenario())


def test_frames__deep_nesting_and_huge_numbers__error_frames_not_a_crash(fleet: Fleet) -> None:
    vin, token = fleet.register()

    async def scenario() -> None:
        ws = await vehicle(fleet, vin, token)
        await frame_of(ws, "SYNC")
        for payload in ("[" * 50_000 + "]" * 50_000, '{"type":"ACK","version":' + "9" * 5000 + "}",
                        '{"type":"ACK","version":1e999}', '{"type":"HEARTBEAT","agent":{"agent_cpu_percent":NaN}}'):
            await ws.send(payload)
            assert (await frame_of(ws, "ERROR"))["code"] in ("invalid_json", "frame_too_large", "invalid_field")
        await ws.send(json.dumps({"type": "SYNC_REQUEST"}))
        await frame_of(ws, "SYNC")
        await ws.close()

    asyncio.run(scenario())


def test_other_websocket_path__refused_cleanly_not_500(fleet: Fleet) -> None:
    async def status(path: str) -> int:
        with pytest.raises(InvalidStatus) as refused:
            await connect(fleet.servers[0].ws_base + path, proxy=None, open_timeout=10)
        return refused.value.response.status_code

    for path in ("/ws/other/", "/", "/ws/vehicles/", "/ws/vehicles/KMH/extra/"):
        assert asyncio.run(status(path)) == 403


def test_every_signed_payload__verifies_with_the_published_key_by_the_spec_recipe_alone(fleet: Fleet) -> None:
    # Given the keys the server publishes, and a vehicle connected to a production flag
    from tests.spec_signing import spec_verify

    status, published = fleet.api("GET", "/api/v1/signing-keys/")
    assert status == 200, published
    vin, token = fleet.register()
    flag_key = key()
    fleet.flag(flag_key)

    async def scenario() -> list[dict[str, object]]:
        ws = await vehicle(fleet, vin, token)
        sync = await frame_of(ws, "SYNC")
        status, body = await asyncio.to_thread(fleet.api, "POST", f"/api/v1/flags/{flag_key}/rules/", {
            "type": "vehicle_whitelist", "conditions": {"vins": [vin]}, "variant": "fleet"})
        assert status == 201, body
        update = await frame_of(ws, "FLAG_UPDATE", flag_key=flag_key)
        status, body = await asyncio.to_thread(fleet.kill, flag_key, "brake noise")
        assert status == 201, body
        kill = await frame_of(ws, "KILL_SWITCH", flag_key=flag_key)
        await ws.close()
        return [sync, update, kill]

    frames = asyncio.run(scenario())
    status, body = fleet.api("GET", f"/api/v1/vehicles/{vin}/sync/")
    assert status == 200, body
    # Then the sync body and each frame kind verify by SPEC §4's recipe, and a changed one does not
    for payload in [body, *frames]:
        assert spec_verify(payload, published), payload.get("type", "sync body")
        tampered = dict(payload, version=int(payload["version"]) + 1)  # type: ignore[call-overload]
        assert not spec_verify(tampered, published)
