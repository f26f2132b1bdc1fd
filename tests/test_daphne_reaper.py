"""The reaper removes only what daphne's own checker would remove without comment."""

from __future__ import annotations

import asyncio
from typing import Any

from fleetflag import daphne_reaper


class FakeServer:
    def __init__(self) -> None:
        self.connections: dict[str, dict[str, Any]] = {}


def test_reap_finished__only_clean_finished_disconnected_requests__removed() -> None:
    loop = asyncio.new_event_loop()
    try:
        def future(result: str | None = None, error: Exception | None = None, cancel: bool = False) -> Any:
            f = loop.create_future()
            if cancel:
                f.cancel()
            elif error is not None:
                f.set_exception(error)
            elif result is not None:
                f.set_result(result)
            return f

        server = FakeServer()
        server.connections = {
            "done": {"application_instance": future("ok"), "disconnected": 1.0},
            "still-connected": {"application_instance": future("ok")},
            "running": {"application_instance": future(), "disconnected": 1.0},
            "failed": {"application_instance": future(error=RuntimeError("boom")), "disconnected": 1.0},
            "cancelled": {"application_instance": future(cancel=True), "disconnected": 1.0},
            "no-app-yet": {"disconnected": 1.0},
        }
        assert daphne_reaper.reap_finished(server) == 1
        assert sorted(server.connections) == ["cancelled", "failed", "no-app-yet", "running", "still-connected"]
        server.connections["failed"]["application_instance"].exception()  # retrieved: no warning at teardown
    finally:
        loop.close()


def test_install__twice__wraps_daphne_once() -> None:
    from daphne.server import Server

    daphne_reaper.install()
    first = Server.application_checker
    daphne_reaper.install()
    assert Server.application_checker is first
    assert getattr(first, "_fleetflag_reaper", False) is True


def test_reap_finished__with_disconnect_notes__visits_only_noted_and_keeps_running_ones() -> None:
    loop = asyncio.new_event_loop()
    try:
        done, running = loop.create_future(), loop.create_future()
        done.set_result("ok")
        other_done = loop.create_future()
        other_done.set_result("ok")
        server = FakeServer()
        server.connections = {
            "noted-done": {"application_instance": done, "disconnected": 1.0},
            "noted-running": {"application_instance": running, "disconnected": 1.0},
            "not-noted-done": {"application_instance": other_done, "disconnected": 1.0},  # daphne's checker reaps it
        }
        server._fleetflag_disconnected = ["noted-done", "noted-running", "gone-already"]  # type: ignore[attr-defined]
        assert daphne_reaper.reap_finished(server) == 1
        assert sorted(server.connections) == ["not-noted-done", "noted-running"]
        assert server._fleetflag_disconnected == ["noted-running"]  # type: ignore[attr-defined]
        running.set_result("ok")
        assert daphne_reaper.reap_finished(server) == 1
        assert server._fleetflag_disconnected == []  # type: ignore[attr-defined]
        assert sorted(server.connections) == ["not-noted-done"]
    finally:
        loop.close()
