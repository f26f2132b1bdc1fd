"""Presence of this process's vehicles, written in batches (never per heartbeat).

Connect, heartbeat and disconnect only touch this buffer. ``flush`` (every
``PRESENCE_FLUSH_SECONDS``, from the hub) writes what changed to the shared presence
(``core.presence``: Redis, in memory embedded) and, at most every
``PRESENCE_DB_FLUSH_SECONDS``, to the database (``vehicles.services.vehicle_presence_flush``:
status, ``last_seen_at``, agent telemetry). Every socket still open is refreshed in the
shared presence a few times per ``PRESENCE_TIMEOUT_SECONDS``; vehicles of a process that died
stop being refreshed and any process's flush takes them offline.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from django.conf import settings

from core import presence
from core.environments import Environment
from vehicles.services import vehicle_presence_flush

log = logging.getLogger("fleetflag.realtime")


class Buffer:
    def __init__(self) -> None:
        self.seen: dict[str, dict[str, float]] = {}  # environment -> VIN -> epoch seconds
        self.holders: dict[str, str] = {}
        self.leaves: list[tuple[str, str, str, float]] = []
        self.rows: dict[str, dict[str, Any]] = {}  # VIN -> the database update waiting
        self.last_refresh = 0.0
        self.last_db = 0.0

    def joined(self, vin: str, environment: str, holder: str) -> None:
        now = time.time()
        self.seen.setdefault(environment, {})[vin] = now
        self.holders[vin] = holder
        self.rows[vin] = {"vin": vin, "status": "online", "last_seen_at": _at(now), "agent": None}

    def heartbeat(self, vin: str, environment: str, agent: dict[str, Any] | None) -> None:
        now = time.time()
        self.seen.setdefault(environment, {})[vin] = now
        row = self.rows.setdefault(vin, {"vin": vin, "status": "online", "agent": None})
        row["last_seen_at"] = _at(now)
        if agent:
            row["agent"] = {**(row.get("agent") or {}), **agent}

    def left(self, vin: str, environment: str, holder: str) -> None:
        # Written after this flush's joins: a vehicle that came and went within one flush ends offline.
        self.leaves.append((environment, vin, holder, time.time()))

    def refresh_due(self) -> bool:
        """Whether the next flush refreshes every open socket (the caller lists them only then)."""
        return time.time() - self.last_refresh >= float(settings.PRESENCE_TIMEOUT_SECONDS) / 3

    async def flush(self, open_sockets: list[tuple[str, str]]) -> None:
        from realtime.hub import in_thread

        now = time.time()
        if open_sockets and now - self.last_refresh >= float(settings.PRESENCE_TIMEOUT_SECONDS) / 3:
            for vin, environment in open_sockets:
                self.seen.setdefault(environment, {})[vin] = now
            self.last_refresh = now
        seen, holders, leaves = self.seen, self.holders, self.leaves
        self.seen, self.holders, self.leaves = {}, {}, []
        # With leaves, the waiting rows go now too, so that no older "online" row lands after an "offline".
        write_db = bool(leaves) or now - self.last_db >= float(settings.PRESENCE_DB_FLUSH_SECONDS)
        rows = self.rows if write_db else {}
        if write_db:
            self.rows, self.last_db = {}, now
        try:
            await in_thread(_write)(seen, holders, leaves, rows, write_db)
        except Exception as exc:  # noqa: BLE001 - Redis or the database away: keep it for next time
            log.warning("presence not written yet: %s", exc)
            for environment, members in seen.items():
                self.seen.setdefault(environment, {}).update({k: v for k, v in members.items()
                                                              if k not in self.seen[environment]})
            self.holders = {**holders, **self.holders}
            self.leaves = leaves + self.leaves
            self.rows = {**rows, **self.rows}


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


def _write(seen: dict[str, dict[str, float]], holders: dict[str, str], leaves: list[tuple[str, str, str, float]],
           rows: dict[str, dict[str, Any]], write_db: bool) -> None:
    if seen or holders:
        presence.seen(seen, holders)
    offline = []
    for environment, vin, holder, at in leaves:
        if presence.leave(environment, vin, holder):
            offline.append({"vin": vin, "status": "offline", "last_seen_at": _at(at), "agent": None})
    if write_db:
        for environment in Environment.values:
            offline += [{"vin": vin, "status": "offline", "last_seen_at": None, "agent": None}
                        for vin in presence.expire(environment)]
    updates = list(rows.values())
    # Offline last: a vehicle that left after its last heartbeat ends offline.
    updates += offline
    if updates:
        vehicle_presence_flush(updates=updates)
