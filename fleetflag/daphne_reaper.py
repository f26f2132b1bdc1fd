"""Spread daphne's clean-up of finished HTTP requests over the second.

daphne keeps every HTTP request in ``Server.connections`` until its ``application_checker``
runs, once a second, and reaps them all in one pass. At thousands of requests a second
that pass holds the event loop for 20-50 ms, which is what a p99 latency then shows
(measured: about 7 % of server time, all in one burst per second). This reaper removes,
every 0.1 s, the entries daphne itself would remove without comment — the request has
finished cleanly and its connection is done — and leaves everything else (errors,
timeouts, open websockets) to daphne's own checker, unchanged.
"""

from __future__ import annotations

import functools
from typing import Any

INTERVAL_SECONDS = 0.1


def reap_finished(server: Any) -> int:
    reaped = 0
    for protocol, details in list(server.connections.items()):
        instance = details.get("application_instance")
        if instance is None or not details.get("disconnected") or not instance.done():
            continue
        if instance.cancelled() or instance.exception() is not None:
            continue  # daphne's checker logs and handles these
        del server.connections[protocol]
        reaped += 1
    return reaped


def install() -> None:
    """Start the reaper with daphne's own checker (idempotent; a no-op without daphne)."""
    try:
        from daphne.server import Server
        from twisted.internet.task import LoopingCall
    except ImportError:
        return
    original = Server.application_checker
    if getattr(original, "_fleetflag_reaper", False):
        return

    @functools.wraps(original)
    def application_checker(self: Any) -> None:
        if getattr(self, "_fleetflag_reaper", None) is None:
            self._fleetflag_reaper = LoopingCall(reap_finished, self)
            self._fleetflag_reaper.start(INTERVAL_SECONDS, now=False)
        original(self)

    application_checker._fleetflag_reaper = True  # type: ignore[attr-defined]
    Server.application_checker = application_checker  # type: ignore[method-assign]
