"""The per-process fan-out: this process's vehicle sockets by environment, and the one task
that receives the push channel and writes each frame to them.

One ``Hub`` per server process (per event loop), started by the first vehicle socket:

- ``listen``: one subscription to the push channel (``core.push``: Redis pub/sub, or in
  process). Each message is an envelope made once by the process that committed the change
  (``flags.broadcasts``); its ``frame`` text is written as it is to every local socket of
  the environment from this task — no channel layer, no per-socket serialisation, no consumer
  dispatch (Channels' ``dispatch`` hops to a thread before every handler: 2.5-3x the CPU of
  the write). The frame's wire bytes are built once and written to each socket's transport
  without an await per socket (``realtime.wire``; the ASGI ``send`` where that cannot be).
- ``sweep``: after every (re)subscription and every ``PUSH_SWEEP_SECONDS``, the environments'
  versions are read from the database once; a socket that was sent (or acknowledged) less
  gets the missed kill switches and a fresh SYNC. That delivers what a lost publish (Redis
  down, a resubscribe) did not, also while Redis is still down.
- the sweep also closes (4401) every socket whose token was revoked or rotated since it
  connected: within ``PUSH_SWEEP_SECONDS`` of the revocation.
- ``flush``: presence (``realtime.presence``), acknowledgements and sent counts, in batches
  from a worker thread: nothing of it is written per frame.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from core import push
from flags import broadcasts
from flags import services as flag_services
from realtime import presence, wire
from vehicles.models import Vehicle

log = logging.getLogger("fleetflag.realtime")
CLOSE_REVOKED = 4401
_ids = itertools.count(1)


@dataclass(eq=False)
class Connection:
    """One open vehicle socket of this process."""

    vin: str
    environment: str
    send: Any  # the ASGI send of the socket
    token_hash: str = ""
    write: wire.Writer | None = None  # pre-built frames straight to the transport (realtime.wire)
    holder: str = field(default_factory=lambda: f"{os.getpid()}:{next(_ids)}")
    sent_version: int = -1
    acked_version: int = -1
    closed: bool = False

    @property
    def known_version(self) -> int:
        return max(self.sent_version, self.acked_version)

    async def send_text(self, text: str) -> bool:
        if self.closed:
            return False
        try:
            await self.send({"type": "websocket.send", "text": text})
        except Exception:  # noqa: BLE001 - the socket went away; its receive loop cleans up
            self.closed = True
            return False
        return True

    def write_frame(self, frame: bytes) -> bool | None:
        """Write a frame built by ``wire.text_frame``: True written, False closed, None: this
        socket needs the ASGI send (``send_text``)."""
        if self.closed:
            return False
        if self.write is None:
            return None
        try:
            written = self.write(frame)
        except Exception:  # noqa: BLE001 - the socket went away; its receive loop cleans up
            written = False
        if written is False:
            self.closed = True
        return written

    async def close(self, code: int) -> None:
        if not self.closed:
            self.closed = True
            try:
                await self.send({"type": "websocket.close", "code": code})
            except Exception:  # noqa: BLE001 - gone already
                pass


def in_thread(function: Any) -> Any:
    """Database work off the event loop, with Django's stale connections looked after."""

    def run(*args: Any, **kwargs: Any) -> Any:
        close_old_connections()
        try:
            return function(*args, **kwargs)
        finally:
            close_old_connections()

    return sync_to_async(run, thread_sensitive=False)


def _frames_for(environment: str, since: int | None, at_least: int | None = None) -> tuple[int, list[tuple[int | None, str]]]:
    """(version, [(event id or None, frame)]): the kill switches missed since ``since`` (when
    given), then the SYNC of the current snapshot."""
    frames: list[tuple[int | None, str]] = []
    if since is not None:
        frames += broadcasts.missed_kill_switches(environment, since)
    version, sync = broadcasts.sync_frame(environment, at_least=at_least)
    frames.append((None, sync))
    return version, frames


class Hub:
    _current: Hub | None = None

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.sockets: dict[str, set[Connection]] = defaultdict(set)
        self.by_vin: dict[str, Connection] = {}
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.sent: dict[int, int] = defaultdict(int)
        self.acks: list[tuple[str, str, int, Any, int]] = []
        self.presence = presence.Buffer()
        self.subscribed = asyncio.Event()
        self.tasks = [loop.create_task(coroutine) for coroutine in (
            push.listen(self._on_subscribed, self.inbox.put_nowait), self._deliver_forever(),
            self._sweep_forever(), self._flush_forever())]

    @classmethod
    def get(cls) -> Hub:
        loop = asyncio.get_running_loop()
        if cls._current is None or cls._current.loop is not loop or cls._current.loop.is_closed():
            cls._current = Hub(loop)
        return cls._current

    # -- sockets -------------------------------------------------------------------------

    def add(self, connection: Connection) -> Connection | None:
        """Register the socket; the older socket of the same VIN in this process, if any."""
        older = self.by_vin.get(connection.vin)
        self.by_vin[connection.vin] = connection
        self.sockets[connection.environment].add(connection)
        self.presence.joined(connection.vin, connection.environment, connection.holder)
        return older

    def remove(self, connection: Connection) -> None:
        connection.closed = True
        self.sockets[connection.environment].discard(connection)
        if self.by_vin.get(connection.vin) is connection:
            del self.by_vin[connection.vin]
        self.presence.left(connection.vin, connection.environment, connection.holder)

    def count(self, environment: str | None = None) -> int:
        if environment is None:
            return len(self.by_vin)
        return len(self.sockets.get(environment, ()))

    # -- sending ---------------------------------------------------------------------------

    async def catch_up(self, connection: Connection, since: int | None, at_least: int | None = None) -> None:
        """The kill switches missed since ``since`` (when given), then a SYNC."""
        version, frames = await in_thread(_frames_for)(connection.environment, since, at_least)
        await self._send_frames(connection, version, frames)

    async def _send_frames(self, connection: Connection, version: int, frames: list[tuple[int | None, str]]) -> None:
        for event, text in frames:
            if await connection.send_text(text) and event is not None:
                self.sent[event] += 1
        if not connection.closed:
            connection.sent_version = max(connection.sent_version, version)

    async def _deliver_forever(self) -> None:
        while True:
            raw = await self.inbox.get()
            try:
                await self._deliver(json.loads(raw))
            except Exception:
                log.exception("push message not delivered")

    async def _deliver(self, envelope: dict[str, Any]) -> None:
        environment, version = envelope["environment"], int(envelope["version"])
        targets = list(self.sockets.get(environment, ()))
        if not targets:
            return
        if envelope["kind"] == "sync":
            version, text = await in_thread(broadcasts.sync_frame)(environment, at_least=version)
        else:
            text = envelope["frame"]
        started = time.perf_counter()
        frame = wire.text_frame(text)
        sent = 0
        slow: list[Connection] = []
        # No await per socket: every raw write is queued in one pass, the others follow.
        for connection in targets:
            written = connection.write_frame(frame)
            if written is None:
                slow.append(connection)
            elif written:
                sent += 1
                if version > connection.sent_version:
                    connection.sent_version = version
        for connection in slow:
            if await connection.send_text(text):
                sent += 1
                if version > connection.sent_version:
                    connection.sent_version = version
        if envelope.get("event") is not None:
            self.sent[int(envelope["event"])] += sent
        log.info("push %s v%s taken at %.3f: %d of %d sockets written in %.1f ms (%d through the ASGI send)",
                 environment, version, time.time() - (time.perf_counter() - started), sent, len(targets),
                 (time.perf_counter() - started) * 1000, len(slow))

    # -- the sweep: what a lost publish did not deliver -----------------------------------

    async def _on_subscribed(self) -> None:
        self.subscribed.set()
        await self.sweep()

    async def sweep(self) -> None:
        environments = sorted(environment for environment, sockets in self.sockets.items() if sockets)
        if not environments:
            return
        await self.close_revoked()
        current = await in_thread(broadcasts.revisions)(environments)
        prepared: dict[tuple[str, int], tuple[int, list[tuple[int | None, str]]]] = {}
        for environment in environments:
            for connection in list(self.sockets.get(environment, ())):
                since = connection.known_version
                if connection.closed or since >= current[environment]:
                    continue
                key = (environment, since)
                if key not in prepared:  # the frames of one (environment, version) are made once
                    prepared[key] = await in_thread(_frames_for)(environment, since, current[environment])
                await self._send_frames(connection, *prepared[key])

    async def close_revoked(self) -> None:
        """Close the sockets whose token was revoked or rotated since they connected (4401)."""
        connections = [c for c in self.by_vin.values() if not c.closed]
        live = await in_thread(_live_token_hashes)([c.vin for c in connections])
        for connection in connections:
            if live.get(connection.vin) != connection.token_hash:
                await connection.close(CLOSE_REVOKED)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(float(settings.PUSH_SWEEP_SECONDS))
            try:
                await self.sweep()
            except Exception as exc:  # noqa: BLE001 - the database is away: next time
                log.warning("push sweep failed: %s", exc)

    # -- batched writes -----------------------------------------------------------------------

    def ack(self, connection: Connection, version: int) -> None:
        if version <= connection.acked_version:
            return  # a repeat, or an older version: this connection's earlier ACK covers it
        after, connection.acked_version = connection.acked_version, version
        # Only the kill switches between the two versions: the older ones are recorded already
        # (one new ACK per engage would otherwise write a row for every earlier engage again).
        self.acks.append((connection.vin, connection.environment, version, timezone.now(), after))

    async def flush(self) -> None:
        acks, self.acks = self.acks, []
        sent, self.sent = dict(self.sent), defaultdict(int)
        if acks or sent:
            try:
                await in_thread(_write_delivery)(acks, sent)
            except Exception as exc:  # noqa: BLE001 - keep them for the next flush
                log.warning("kill-switch delivery not written yet: %s", exc)
                self.acks = acks + self.acks
                for event, count in sent.items():
                    self.sent[event] += count
        refresh = ([(c.vin, c.environment) for c in self.by_vin.values() if not c.closed]
                   if self.presence.refresh_due() else [])
        await self.presence.flush(refresh)

    async def _flush_forever(self) -> None:
        interval = min(float(settings.ACK_FLUSH_SECONDS), float(settings.PRESENCE_FLUSH_SECONDS))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush()
            except Exception:
                log.exception("flush failed")


def _live_token_hashes(vins: list[str]) -> dict[str, str]:
    """VIN -> token hash, for the VINs whose token is live (not revoked)."""
    found: dict[str, str] = {}
    for start in range(0, len(vins), 2000):
        rows = Vehicle.objects.filter(vin__in=vins[start:start + 2000], token_revoked_at__isnull=True).values_list(
            "vin", "token_hash")
        found.update((vin, token_hash) for vin, token_hash in rows if token_hash)
    return found


def _write_delivery(acks: list[tuple[Any, ...]], sent: dict[int, int]) -> None:
    if sent:
        flag_services.kill_switch_sent_record(sent=sent)
    if acks:
        flag_services.kill_switch_acks_record(acks=acks)
