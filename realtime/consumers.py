"""The vehicle websocket ``/ws/vehicles/{vin}/`` (SPEC §4, docs/realtime.md).

A plain ASGI application routed by Channels' ``URLRouter`` and served by daphne. It is no
Channels consumer on purpose: a consumer takes a channel-layer channel per socket and runs
every incoming message through ``dispatch``, which hops to a worker thread first; pushed
frames here never pass through the socket's own task at all (``realtime.hub`` writes them),
and incoming frames are handled on the event loop, database work batched.

Authentication: the vehicle token from ``Authorization: Bearer …`` or the query ``token=``
(the header wins); refused with close 4401 (missing, malformed, unknown, revoked) or 4403
(a valid token of another VIN), after accepting so that the client sees the code.

Frames (JSON text): server → vehicle SYNC, KILL_SWITCH, FLAG_UPDATE, ERROR; vehicle →
server ACK {version}, HEARTBEAT {agent}, SYNC_REQUEST {version}. A malformed frame gets
``{"type": "ERROR", "code", "message"}``; more than ``WS_MALFORMED_LIMIT`` of them within
``WS_MALFORMED_WINDOW_SECONDS`` closes the socket with 4400.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from typing import Any
from urllib.parse import parse_qs

from django.conf import settings

from realtime import wire
from realtime.hub import Connection, Hub, in_thread
from vehicles.selectors import VehicleRefused, vehicle_for_token

CLOSE_MALFORMED = 4400
CLOSE_REPLACED = 4409  # the same VIN connected again to this process: the older socket goes
ERROR = "ERROR"
TELEMETRY = {"agent_version": str, "agent_memory_mb": float, "agent_cpu_percent": float, "cache_size_mb": float}


class Malformed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


async def refuse(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Any other websocket path: the handshake is denied (daphne answers HTTP 403)."""
    if scope["type"] != "websocket":
        return
    message = await receive()
    if message["type"] == "websocket.connect":
        await send({"type": "websocket.close", "code": 1008})


def credentials(scope: dict[str, Any]) -> tuple[str, int | None]:
    """(token, version from ``?version=``): the bearer header first, then ``?token=``."""
    token = ""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, rest = value.decode("latin1").partition(" ")
            if scheme.lower() == "bearer":
                token = rest.strip()
    query = parse_qs(scope.get("query_string", b"").decode("latin1"))
    if not token:
        token = (query.get("token") or [""])[0]
    version = None
    raw = (query.get("version") or [""])[0]
    if raw.isdigit() and len(raw) <= 18:
        version = int(raw)
    return token, version


def _version(frame: dict[str, Any], required: bool) -> int | None:
    value = frame.get("version")
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > 2**63:
        raise Malformed("invalid_field", "version must be a non-negative integer")
    return value


def _telemetry(frame: dict[str, Any]) -> dict[str, Any] | None:
    agent = frame.get("agent")
    if agent is None:
        return None
    if not isinstance(agent, dict):
        raise Malformed("invalid_field", "agent must be an object")
    clean: dict[str, Any] = {}
    for name, kind in TELEMETRY.items():
        value = agent.get(name)
        if value is None:
            continue
        if kind is str:
            if not isinstance(value, str) or len(value) > 32:
                raise Malformed("invalid_field", f"agent.{name} must be a string of at most 32 characters")
        elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise Malformed("invalid_field", f"agent.{name} must be a non-negative number")
        clean[name] = float(value) if kind is float else value
    return clean


def parse(message: dict[str, Any]) -> dict[str, Any]:
    """The frame as a dict with a known type, or Malformed."""
    text = message.get("text")
    if text is None:
        raise Malformed("binary_frame", "frames are JSON text; binary frames are not accepted")
    if len(text) > settings.WS_MAX_FRAME_BYTES or len(text.encode("utf-8", "surrogatepass")) > settings.WS_MAX_FRAME_BYTES:
        raise Malformed("frame_too_large", f"a frame has at most {settings.WS_MAX_FRAME_BYTES} bytes")
    try:
        frame = json.loads(text)
    except (ValueError, RecursionError):
        raise Malformed("invalid_json", "the frame is not JSON") from None
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise Malformed("invalid_frame", 'a frame is a JSON object with a "type"')
    if frame["type"] not in ("ACK", "HEARTBEAT", "SYNC_REQUEST"):
        raise Malformed("unknown_type", "type must be ACK, HEARTBEAT or SYNC_REQUEST")
    return frame


def error_frame(code: str, message: str) -> str:
    return json.dumps({"type": ERROR, "code": code, "message": message}, separators=(",", ":"))


class VehicleSocket:
    """One vehicle's socket: authenticate, register with the hub, SYNC, then read frames."""

    @classmethod
    def as_asgi(cls) -> Any:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await cls().run(scope, receive, send)

        return app

    async def run(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        vin = scope["url_route"]["kwargs"]["vin"]
        token, since = credentials(scope)
        try:
            vehicle = await in_thread(vehicle_for_token)(vin, token)
        except VehicleRefused as refused:
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": refused.close_code})
            return
        await send({"type": "websocket.accept"})
        hub = Hub.get()
        connection = Connection(vin=vehicle.vin, environment=vehicle.environment, send=send,
                                token_hash=vehicle.token_hash or "", write=wire.raw_writer(send))
        older = hub.add(connection)
        if older is not None:
            await older.close(CLOSE_REPLACED)
        try:
            # Registered first, then the SYNC: a frame pushed meanwhile arrives too (twice at most).
            await hub.catch_up(connection, since)
            await self.read(hub, connection, receive)
        finally:
            hub.remove(connection)

    async def read(self, hub: Hub, connection: Connection, receive: Any) -> None:
        malformed: deque[float] = deque()
        window, limit = float(settings.WS_MALFORMED_WINDOW_SECONDS), int(settings.WS_MALFORMED_LIMIT)
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            if message["type"] != "websocket.receive" or connection.closed:
                continue
            try:
                frame = parse(message)
                await self.handle(hub, connection, frame)
            except Malformed as bad:
                now = time.monotonic()
                malformed.append(now)
                while malformed and malformed[0] < now - window:
                    malformed.popleft()
                if len(malformed) > limit:
                    await connection.send_text(error_frame("too_many_malformed_frames",
                                                           f"more than {limit} malformed frames in {window:g} s"))
                    await connection.close(CLOSE_MALFORMED)
                    continue
                await connection.send_text(error_frame(bad.code, bad.message))

    async def handle(self, hub: Hub, connection: Connection, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind == "ACK":
            version = _version(frame, required=True)
            assert version is not None
            hub.ack(connection, version)
        elif kind == "HEARTBEAT":
            hub.presence.heartbeat(connection.vin, connection.environment, _telemetry(frame))
        else:  # SYNC_REQUEST
            await hub.catch_up(connection, _version(frame, required=False))
