"""daphne and uvicorn side by side behind one Redis: the websocket fan-out is the same on
both (one subscription per process, one frame written to each socket's transport, the ASGI
send where it cannot be: a socket that negotiated permessage-deflate), so a vehicle on either
gets every push, and presence and acknowledgements are counted whichever process holds it.

Needs PostgreSQL and Redis configured, as ``test_push_cluster_live``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.realtime.live import Fleet, frame_of, redis_cluster, vehicle

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def mixed(django_db_setup: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet | None]:
    from django.conf import settings
    from django.db import connection

    if connection.vendor != "postgresql" or not settings.REDIS_URL:
        yield None
        return
    yield from redis_cluster(Path(tmp_path_factory.mktemp("ws-mixed")), connection.settings_dict,
                             servers=("daphne", "uvicorn"))


@pytest.fixture
def fleet(require_postgres: None, require_redis: None, committed_db: None, mixed: Fleet | None) -> Fleet:
    from accounts.services import api_key_create
    from core.actors import Actor

    assert mixed is not None and mixed.redis is not None
    mixed.redis.command("FLUSHALL")
    _, mixed.admin_key = api_key_create(actor=Actor.for_system("ws mixed test"), name="ws-admin", role="ADMIN")
    return mixed


def test_kill_switch__daphne_and_uvicorn__every_vehicle_gets_it_presence_and_acks_counted(fleet: Fleet) -> None:
    # Given a vehicle on daphne, and two on uvicorn: one with permessage-deflate, one without
    vehicles = [fleet.register() for _ in range(3)]
    flag_key = "ws.mixed-1"
    fleet.flag(flag_key)

    async def scenario() -> None:
        sockets = [await vehicle(fleet, *vehicles[0], server=0, compression=None),
                   await vehicle(fleet, *vehicles[1], server=1, compression="deflate"),
                   await vehicle(fleet, *vehicles[2], server=1, compression=None)]
        for ws in sockets:
            await frame_of(ws, "SYNC")
        await asyncio.sleep(0.6)  # presence flushed (0.2 s)
        # When the kill switch is engaged through the uvicorn process
        code, body = await asyncio.to_thread(fleet.kill, flag_key, "inverter fault", 1)
        assert code == 201, body
        # Then all three are counted online and get the same signed frame
        assert body["delivery"]["targeted_online"] == 3
        frames = [await frame_of(ws, "KILL_SWITCH", flag_key=flag_key) for ws in sockets]
        assert len({json.dumps(f, sort_keys=True) for f in frames}) == 1
        assert frames[0]["sig"]
        # When each acknowledges
        for ws in sockets:
            await ws.send(json.dumps({"type": "ACK", "version": frames[0]["version"]}))
        # Then the event counts 3 sent and 3 acknowledgements, whichever process wrote them
        await asyncio.to_thread(fleet.wait_for, lambda: (d := fleet.delivery(flag_key))["sent"] == 3
                                and d["acknowledged"] == 3, 10, "3 sent, 3 acked")
        # And a later FLAG_UPDATE (the lift) reaches all three too
        code, _ = await asyncio.to_thread(fleet.api, "DELETE", f"/api/v1/flags/{flag_key}/kill-switch/", {}, 0)
        assert code == 200
        for ws in sockets:
            await frame_of(ws, "FLAG_UPDATE", flag_key=flag_key)
            await ws.close()

    asyncio.run(scenario())
