"""Two daphne processes behind Redis: a kill switch reaches the vehicles of both, presence is
shared, and a Redis outage neither loses a kill switch nor fails its engage.

Needs PostgreSQL and Redis configured (CI has both; skipped elsewhere, failed in CI when
missing). The servers use this run's PostgreSQL test database and a redis-server of the
test's own on a free port, which the outage test stops and starts again."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from itertools import count
from pathlib import Path
from typing import Any

import pytest

from tests.realtime.live import Fleet, frame_of, nothing_of, redis_cluster, vehicle

pytestmark = pytest.mark.live
_keys = count(1)


@pytest.fixture(scope="module")
def cluster(django_db_setup: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet | None]:
    from django.conf import settings
    from django.db import connection

    if connection.vendor != "postgresql" or not settings.REDIS_URL:
        yield None  # require_postgres / require_redis skip the tests (and fail them in CI)
        return
    yield from redis_cluster(Path(tmp_path_factory.mktemp("ws-cluster")), connection.settings_dict)


@pytest.fixture
def fleet(require_postgres: None, require_redis: None, committed_db: None, cluster: Fleet | None) -> Fleet:
    from accounts.services import api_key_create
    from core.actors import Actor

    assert cluster is not None and cluster.redis is not None
    if cluster.redis.proc is None:
        cluster.redis.start()
    cluster.redis.command("FLUSHALL")  # the snapshot cache and presence of the previous test's database
    _, cluster.admin_key = api_key_create(actor=Actor.for_system("ws cluster test"), name="ws-admin", role="ADMIN")
    return cluster


def key() -> str:
    return f"ws.cluster-{next(_keys)}"


def status_of(fleet: Fleet, vin: str) -> str:
    code, body = fleet.api("GET", f"/api/v1/vehicles/{vin}/")
    assert code == 200, body
    return str(body["status"])


def test_kill_switch__two_processes__every_vehicle_of_the_environment_acked_counted(fleet: Fleet) -> None:
    # Given four production vehicles, two on each server process, and a staging vehicle
    production = [fleet.register() for _ in range(4)]
    staging = fleet.register("staging")
    flag_key = key()
    fleet.flag(flag_key)

    async def scenario() -> None:
        sockets = [await vehicle(fleet, vin, token, server=i % 2) for i, (vin, token) in enumerate(production)]
        other = await vehicle(fleet, *staging, server=1)
        for ws in [*sockets, other]:
            await frame_of(ws, "SYNC")
        # Presence is shared: both processes' vehicles count as online
        await asyncio.to_thread(fleet.wait_for, lambda: all(status_of(fleet, vin) == "online" for vin, _ in production),
                                10, "all online in the database")
        # When the kill switch is engaged through server 1
        code, body = await asyncio.to_thread(fleet.kill, flag_key, "inverter fault")
        assert code == 201, body
        assert body["delivery"]["targeted_online"] == 4
        assert body["delivery"]["targeted_vehicles"] == 4
        # Then the vehicles of both processes get it, the staging one does not
        frames = [await frame_of(ws, "KILL_SWITCH", flag_key=flag_key) for ws in sockets]
        await nothing_of(other, "KILL_SWITCH", 0.5)
        version = frames[0]["version"]
        # When one vehicle of each process acknowledges
        await sockets[0].send(json.dumps({"type": "ACK", "version": version}))
        await sockets[1].send(json.dumps({"type": "ACK", "version": version}))
        # Then the event counts 4 sent (2 by each process) and 2 acknowledgements
        await asyncio.to_thread(fleet.wait_for, lambda: (d := fleet.delivery(flag_key))["sent"] == 4
                                and d["acknowledged"] == 2 and d["pushed"], 10, "4 sent, 2 acked")
        # And the vehicles that left are offline in the database
        for ws in [*sockets, other]:
            await ws.close()
        await asyncio.to_thread(fleet.wait_for, lambda: all(status_of(fleet, vin) == "offline"
                                                            for vin, _ in production), 10, "all offline")

    asyncio.run(scenario())


def test_redis_outage__kill_switch_committed_answered_and_delivered(fleet: Fleet) -> None:
    # Given vehicles connected to both processes
    assert fleet.redis is not None
    production = [fleet.register() for _ in range(2)]
    first, second = key(), key()
    fleet.flag(first)
    fleet.flag(second)

    async def scenario() -> None:
        sockets = [await vehicle(fleet, vin, token, server=i) for i, (vin, token) in enumerate(production)]
        for ws in sockets:
            await frame_of(ws, "SYNC")
        # When Redis stops and a kill switch is engaged
        fleet.redis.stop()
        code, body = await asyncio.to_thread(fleet.kill, first, "redis down")
        # Then the engage is committed and answered
        assert code == 201, body
        assert body["engaged"] is True and body["delivery"]["pushed"] is False
        await nothing_of(sockets[0], "KILL_SWITCH", 1.0)  # no channel, and the periodic sweep is 30 s away
        # When Redis is back, each process resubscribes and catches its sockets up from the database
        fleet.redis.start()
        for ws in sockets:
            await frame_of(ws, "KILL_SWITCH", flag_key=first, timeout=10)
        # And the push channel delivers again through both processes
        code, body = await asyncio.to_thread(fleet.kill, second, "redis back")
        assert code == 201, body
        for ws in sockets:
            await frame_of(ws, "KILL_SWITCH", flag_key=second, timeout=3)
        assert (await asyncio.to_thread(fleet.delivery, second))["pushed"] is True
        for ws in sockets:
            await ws.close()

    asyncio.run(scenario())


def test_killed_server_process__its_vehicles_offline_after_the_timeout_and_reconnect_elsewhere(fleet: Fleet) -> None:
    import os
    import signal

    from tests.realtime.live import start_daphne

    # Given a third server process holding a vehicle
    vin, token = fleet.register()
    doomed = start_daphne(fleet.extra["env"], fleet.extra["tmp"] / "daphne-doomed.log", fleet.extra["stack"])
    fleet.servers.append(doomed)
    try:
        async def scenario() -> None:
            ws = await vehicle(fleet, vin, token, server=2)
            await frame_of(ws, "SYNC")
            await asyncio.to_thread(fleet.wait_for, lambda: status_of(fleet, vin) == "online", 10, "online")
            # When that process is killed outright (no clean-up of its own)
            os.kill(doomed.proc.pid, signal.SIGKILL)
            doomed.proc.wait(10)
            # Then another process takes the vehicle offline once nobody refreshed it (3 s here)
            await asyncio.to_thread(fleet.wait_for, lambda: status_of(fleet, vin) == "offline", 15, "offline")
            # And the vehicle reconnects to a live process and is online again, with a SYNC
            again = await vehicle(fleet, vin, token, server=0)
            await frame_of(again, "SYNC")
            await asyncio.to_thread(fleet.wait_for, lambda: status_of(fleet, vin) == "online", 10, "online again")
            await again.close()

        asyncio.run(scenario())
    finally:
        fleet.servers.remove(doomed)
