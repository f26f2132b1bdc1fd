"""Kill-switch fan-out: time from the engage request to each vehicle socket's KILL_SWITCH frame.

    .venv/bin/python bench/killswitch_bench.py --vehicles 1000 [--processes 2]

One or more daphne processes (as docs/scaling.md starts them: an endpoint with a backlog) on a
fresh database; N vehicles registered through ``vehicles.services.vehicle_register``, each
holding one websocket from this process (the websockets client). The kill switch is engaged
through the REST API; printed: connect time, p50/p95/p99/max of engage-to-frame, the
event's sent count. With ``--processes`` > 1, REDIS_URL must be set (PostgreSQL through
DATABASE_URL, or a fresh SQLite file otherwise, which one process only should use).

The load client runs on the same cores as the servers: compare ratios from one run only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.api.live import free_port, stop  # noqa: E402

SETUP = r"""
import json, sys, django
django.setup()
from accounts.services import api_key_create
from core.actors import Actor
from flags import services
from vehicles.services import vehicle_register
system = Actor.for_system("killswitch bench")
n = int(sys.argv[1])
vehicles = []
for i in range(n):
    vin = f"KMHBENCH{i:09d}"
    _, token = vehicle_register(actor=system, vin=vin, model="ev6", sw_version="2.9.1", region="eu-west")
    vehicles.append([vin, token])
services.flag_create(actor=system, key="bench.brake", name="bench", type="boolean", default_value=False, enabled=True)
_, key = api_key_create(actor=system, name="bench-admin", role="ADMIN")
print(json.dumps({"key": key, "vehicles": vehicles}))
"""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def run(urls: list[str], key: str, vehicles: list[list[str]]) -> None:
    from websockets.asyncio.client import connect

    received: dict[str, float] = {}
    sockets = []
    started = time.monotonic()
    gate = asyncio.Semaphore(100)

    async def open_one(index: int, vin: str, token: str) -> None:
        async with gate:
            ws = await connect(f"{urls[index % len(urls)].replace('http', 'ws')}/ws/vehicles/{vin}/?token={token}",
                               proxy=None, open_timeout=60, max_size=None)
            await ws.recv()  # the SYNC on connect
            sockets.append((vin, ws))

    await asyncio.gather(*(open_one(i, vin, token) for i, (vin, token) in enumerate(vehicles)))
    connected = time.monotonic() - started
    await asyncio.sleep(3)  # presence flushed

    async def listen(vin: str, ws: object) -> None:
        while True:
            frame = json.loads(await ws.recv())  # type: ignore[attr-defined]
            if frame.get("type") == "KILL_SWITCH":
                received[vin] = time.monotonic()
                return

    listeners = [asyncio.create_task(listen(vin, ws)) for vin, ws in sockets]
    request = urllib.request.Request(urls[0] + "/api/v1/flags/bench.brake/kill-switch/", method="POST",
                                     data=json.dumps({"reason": "bench"}).encode(),
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    t0 = time.monotonic()
    answer = await asyncio.to_thread(lambda: urllib.request.urlopen(request, timeout=60).read())
    answered = time.monotonic() - t0
    await asyncio.wait(listeners, timeout=60)
    latencies = [received[vin] - t0 for vin in received]
    body = json.loads(answer)
    await asyncio.sleep(2)  # sent counts are written in batches
    with urllib.request.urlopen(urllib.request.Request(urls[0] + "/api/v1/flags/bench.brake/kill-switch/",
                                                       headers={"Authorization": f"Bearer {key}"})) as response:
        delivery = json.loads(response.read())["delivery"]
    print(f"vehicles {len(vehicles)}, processes {len(urls)}: connected in {connected:.1f} s; engage answered in "
          f"{answered * 1000:.0f} ms (targeted_online {body['delivery']['targeted_online']})")
    print(f"  engage -> KILL_SWITCH frame: received {len(latencies)}/{len(sockets)}; p50 {percentile(latencies, 50):.3f} s, "
          f"p95 {percentile(latencies, 95):.3f} s, p99 {percentile(latencies, 99):.3f} s, max {max(latencies):.3f} s")
    print(f"  event: sent {delivery['sent']}, pushed {delivery['pushed']}")
    for _, ws in sockets:
        await ws.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vehicles", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ff-killswitch-bench-"))
    env = {k: v for k, v in os.environ.items() if k != "FLEETFLAG_SETTINGS"}
    env.setdefault("DATABASE_URL", f"sqlite:///{tmp / 'bench.sqlite3'}")
    env.update(FLEETFLAG_VAR_DIR=str(tmp), DJANGO_SETTINGS_MODULE="fleetflag.settings", PYTHONPATH=str(ROOT),
               PUSH_PREFIX=f"ffbench{os.getpid()}", LOG_LEVEL="WARNING")
    if args.processes > 1 and not env.get("REDIS_URL"):
        sys.exit("several processes need REDIS_URL")
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    setup = subprocess.run([sys.executable, "-c", SETUP, str(args.vehicles)], cwd=ROOT, env=env, check=True,
                           capture_output=True, text=True)
    data = json.loads(setup.stdout.strip().splitlines()[-1])
    daphne = Path(sys.executable).with_name("daphne")
    with ExitStack() as stack:
        urls = []
        for i in range(args.processes):
            port = free_port()
            log = stack.enter_context(open(tmp / f"daphne-{i}.log", "wb"))
            proc = subprocess.Popen([str(daphne), "-e", f"tcp:port={port}:backlog=4096:interface=127.0.0.1",
                                     "fleetflag.asgi:application"], cwd=ROOT, env=env, stdout=log,
                                    stderr=subprocess.STDOUT)
            stack.callback(stop, proc)
            urls.append(f"http://127.0.0.1:{port}")
        for url in urls:
            for _ in range(100):
                try:
                    urllib.request.urlopen(url + "/healthz", timeout=1)
                    break
                except OSError:
                    time.sleep(0.2)
        asyncio.run(run(urls, data["key"], data["vehicles"]))


if __name__ == "__main__":
    main()
