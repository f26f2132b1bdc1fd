"""Kill-switch fan-out: from the engage API call to each vehicle's KILL_SWITCH frame.

    .venv/bin/python bench/killswitch_bench.py --vehicles 1000,5000,10000 [--servers daphne,uvicorn]
        [--processes 2] [--clients 4] [--repeats 3] [--max-load 1.0] [--load-wait 900]

What it does, per server kind (daphne, uvicorn) and per N:

- ``--processes`` server processes (2), each on its own port with a listen backlog of 4096, on
  PostgreSQL (``DATABASE_URL``, default ``postgres://postgres@127.0.0.1:5432/ff_bench``, dropped
  and created afresh) and Redis (``REDIS_URL``, default ``redis://127.0.0.1:6379/9``: a database
  number of the bench's own, flushed at the start; ``PUSH_PREFIX`` ``ffbench``).
- max(N) vehicles are registered once (``--register bulk``: one ``bulk_create`` of vehicles whose
  tokens are made by ``vehicles.tokens`` and of which only the SHA-256 is stored, as
  ``vehicle_register`` stores them; ``--register service``: ``vehicle_register`` per vehicle,
  audited). The tokens stay in the bench's temporary folder.
- ``--clients`` client processes (4), each holding N/clients vehicle sockets (a minimal RFC 6455
  client on asyncio, so that the clients cost the shared cores as little as possible), spread
  round-robin over the server processes. Each socket connects, gets its SYNC, answers pings and
  ACKs every KILL_SWITCH and FLAG_UPDATE it gets with its version, as the agent does.
- Connection set-up rate: N / the wall time from the first connect to the last SYNC received.
- Server RSS per connection: the sum over the server processes of VmRSS (``/proc/PID/status``)
  after the N sockets are open minus before, divided by N.
- ``--warmup`` (1) engage and lift, not measured (fresh server processes' cold caches); then
  ``--repeats`` engages (3): the kill switch is engaged through the REST API (POST
  ``flags/bench.brake/kill-switch/``, alternating between the server processes); ``t0 =
  time.time()`` just before the call is handed to the client processes, which return each
  vehicle's receipt time minus t0 (one machine: one clock). Printed per engage: p50, p99, max,
  missed (no KILL_SWITCH within ``--deadline`` seconds), the engage answer's time, and the
  delivery the API reports 2 s later (targeted online, sent, acknowledged). The kill switch is
  lifted (DELETE, a FLAG_UPDATE to every vehicle) between engages.
- Before each N and each engage, the 1-minute load average is polled every 30 s (up to
  ``--load-wait`` s) until it is below ``--max-load``; the load at each engage is printed.

The client processes share the machine's cores with the servers, Redis and PostgreSQL: the
figures include the clients' own work of receiving 10,000 frames.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.api.live import free_port, stop  # noqa: E402

FLAG = "bench.brake"
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

SETUP = r"""
import json, sys, time, django
django.setup()
from django.utils import timezone
from accounts.services import api_key_create
from core.actors import Actor
from flags import services
from vehicles import tokens
from vehicles.models import Vehicle
from vehicles.services import vehicle_register
system = Actor.for_system("killswitch bench")
n, mode, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
started = time.perf_counter()
vehicles = []
if mode == "service":
    for i in range(n):
        vin = f"KMHBENCH{i:09d}"
        _, token = vehicle_register(actor=system, vin=vin, model="ev6", sw_version="2.9.1", region="eu-west")
        vehicles.append([vin, token])
else:
    now = timezone.now()
    rows = []
    for i in range(n):
        vin, token = f"KMHBENCH{i:09d}", tokens.new_token()
        rows.append(Vehicle(vin=vin, model="ev6", sw_version="2.9.1", region="eu-west", environment="production",
                            token_hash=tokens.hash_token(token), token_issued_at=now, created_at=now, updated_at=now))
        vehicles.append([vin, token])
    Vehicle.objects.bulk_create(rows, batch_size=2000)
registered = time.perf_counter() - started
services.flag_create(actor=system, key="bench.brake", name="bench", type="boolean", default_value=False, enabled=True)
_, key = api_key_create(actor=system, name="bench-admin", role="ADMIN")
with open(out, "w") as f:
    json.dump({"key": key, "vehicles": vehicles}, f)
print(json.dumps({"registered_seconds": registered}))
"""


# -- the client processes ------------------------------------------------------------------------


def _mask(payload: bytes) -> bytes:
    key = os.urandom(4)
    n = len(payload)
    masked = int.from_bytes(payload, "big") ^ int.from_bytes((key * (n // 4 + 1))[:n], "big")
    return key + masked.to_bytes(n, "big")


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (RFC 6455 §5.3)."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return header + _mask(payload)


class VehicleProtocol(asyncio.Protocol):
    """One vehicle socket: handshake, SYNC, then KILL_SWITCH receipt times and ACKs."""

    def __init__(self, owner: ClientSide, vin: str, request: bytes) -> None:
        self.owner, self.vin, self.request = owner, vin, request
        self.buffer = bytearray()
        self.upgraded = False
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before SYNC ({exc})"))
        self.owner.lost += 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self.buffer[:end]).split(b"\r\n", 1)[0]
            if b" 101 " not in status + b" ":
                if not self.ready.done():
                    self.ready.set_exception(ConnectionError(status.decode("latin1")))
                return
            self.upgraded = True
            del self.buffer[:end + 4]
        while len(self.buffer) >= 2:
            b0, b1 = self.buffer[0], self.buffer[1]
            length, offset = b1 & 0x7F, 2
            if length == 126:
                if len(self.buffer) < 4:
                    return
                length, offset = struct.unpack_from("!H", self.buffer, 2)[0], 4
            elif length == 127:
                if len(self.buffer) < 10:
                    return
                length, offset = struct.unpack_from("!Q", self.buffer, 2)[0], 10
            if b1 & 0x80:
                offset += 4  # servers do not mask; tolerated anyway
            if len(self.buffer) < offset + length:
                return
            payload = bytes(self.buffer[offset:offset + length])
            del self.buffer[:offset + length]
            self.on_frame(b0 & 0x0F, payload)

    def on_frame(self, opcode: int, payload: bytes) -> None:
        if opcode == 0x9 and self.transport is not None:  # ping
            self.transport.write(client_frame(0xA, payload))
            return
        if opcode == 0x8:
            self.owner.closed_by_server += 1
            return
        if opcode != 0x1:
            return
        if not self.ready.done():
            self.ready.set_result(None)  # the SYNC on connect
            return
        if b'"KILL_SWITCH"' in payload:
            self.owner.received.setdefault(self.vin, time.time())
            self.ack(payload)
        elif b'"FLAG_UPDATE"' in payload:
            self.ack(payload)

    def ack(self, payload: bytes) -> None:
        if not self.owner.ack_frames:
            return
        version = json.loads(payload)["version"]
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(0x1, b'{"type":"ACK","version":%d}' % version))
            self.owner.acks += 1


class ClientSide:
    """What one client process holds: its sockets and what they received."""

    def __init__(self) -> None:
        self.protocols: list[VehicleProtocol] = []
        self.received: dict[str, float] = {}
        self.lost = self.closed_by_server = self.acks = 0
        self.ack_frames = True

    async def connect_all(self, vehicles: list[tuple[str, str, str]], concurrency: int) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(concurrency)
        failures: list[str] = []

        async def one(vin: str, token: str, base: str) -> None:
            host, port = base.removeprefix("http://").split(":")
            key = base64.b64encode(os.urandom(16)).decode()
            request = (f"GET /ws/vehicles/{vin}/?token={token} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                       f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                       f"Sec-WebSocket-Version: 13\r\n\r\n").encode()
            async with gate:
                for attempt in range(3):
                    try:
                        _, protocol = await loop.create_connection(lambda: VehicleProtocol(self, vin, request),
                                                                   host, int(port))
                        await asyncio.wait_for(protocol.ready, 60)
                        self.protocols.append(protocol)
                        return
                    except (OSError, TimeoutError) as exc:
                        if attempt == 2:
                            failures.append(f"{vin}: {exc}")
                        await asyncio.sleep(0.5)

        started = time.time()
        await asyncio.gather(*(one(*v) for v in vehicles))
        return {"open": len(self.protocols), "failed": len(failures), "errors": failures[:3], "started": started,
                "finished": time.time()}

    async def collect(self, t0: float, deadline: float) -> dict[str, Any]:
        end = time.monotonic() + deadline
        want = {p.vin for p in self.protocols}
        while time.monotonic() < end and not want <= self.received.keys():
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)  # the ACKs of the last ones written
        latencies = [self.received[vin] - t0 for vin in want if vin in self.received]
        return {"latencies": latencies, "missed": len(want - self.received.keys()), "acks": self.acks,
                "lost": self.lost, "closed_by_server": self.closed_by_server}


def client_main(conn: Any) -> None:
    """One client process: commands from the bench on a pipe, answers back."""
    async def serve() -> None:
        side = ClientSide()
        loop = asyncio.get_running_loop()
        commands: asyncio.Queue[Any] = asyncio.Queue()
        loop.add_reader(conn.fileno(), lambda: commands.put_nowait(conn.recv()))
        while True:
            command, *args = await commands.get()
            if command == "connect":
                side.ack_frames = args[2]
                conn.send(await side.connect_all(*args[:2]))
            elif command == "arm":
                side.received.clear()
                side.acks = 0
                conn.send("armed")
            elif command == "collect":
                conn.send(await side.collect(*args))
            elif command == "close":
                for protocol in side.protocols:
                    if protocol.transport is not None:
                        protocol.transport.close()
                await asyncio.sleep(0.5)
                conn.send("closed")
                return

    asyncio.run(serve())


# -- the servers -----------------------------------------------------------------------------------


def server_command(kind: str, port: int) -> list[str]:
    bin_dir = Path(sys.executable).parent
    if kind == "daphne":  # as docs/scaling.md starts it
        return [str(bin_dir / "daphne"), "-e", f"tcp:port={port}:backlog=4096:interface=127.0.0.1",
                "fleetflag.asgi:application"]
    if kind == "uvicorn":
        return [str(bin_dir / "uvicorn"), "fleetflag.asgi:application", "--host", "127.0.0.1", "--port", str(port),
                "--backlog", "4096", "--ws", "websockets-sansio", "--no-access-log", "--lifespan", "off",
                "--timeout-keep-alive", "75"]
    raise SystemExit(f"unknown server {kind}")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def load1() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def wait_for_load(max_load: float, max_wait: float, what: str) -> float:
    """Poll the 1-minute load average every 30 s until it is below ``max_load`` (or give up)."""
    deadline = time.monotonic() + max_wait
    load = load1()
    while load >= max_load and time.monotonic() < deadline:
        print(f"    (load {load:.2f} >= {max_load} before {what}: waiting)", flush=True)
        time.sleep(min(30.0, max(1.0, deadline - time.monotonic())))
        load = load1()
    if load >= max_load:
        print(f"    (load still {load:.2f} after {max_wait:.0f} s: measuring anyway)", flush=True)
    return load


def api(base: str, method: str, path: str, key: str, body: Any = None, timeout: float = 60) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method, headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with OPENER.open(request, timeout=timeout) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()[:500]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def measure_n(urls: list[str], pids: list[int], key: str, vehicles: list[list[str]], n: int,
              args: argparse.Namespace) -> dict[str, Any]:
    load_before = wait_for_load(args.max_load, args.load_wait, f"connecting {n}")
    context = multiprocessing.get_context("fork")
    pipes, procs = [], []
    for _ in range(args.clients):
        parent, child = context.Pipe()
        proc = context.Process(target=client_main, args=(child,), daemon=True)
        proc.start()
        pipes.append(parent)
        procs.append(proc)
    try:
        return _measure(urls, pids, key, vehicles, n, args, pipes, load_before)
    finally:
        for pipe in pipes:
            try:
                pipe.send(("close",))
                pipe.poll(30) and pipe.recv()
            except (OSError, EOFError):
                pass
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
        time.sleep(5)  # the servers take the vehicles offline (presence) before the next N


def _measure(urls: list[str], pids: list[int], key: str, vehicles: list[list[str]], n: int,
             args: argparse.Namespace, pipes: list[Any], load_before: float) -> dict[str, Any]:
    rss_before = sum(rss_kb(pid) for pid in pids)
    slices: list[list[tuple[str, str, str]]] = [[] for _ in pipes]
    for i, (vin, token) in enumerate(vehicles[:n]):
        slices[i % len(pipes)].append((vin, token, urls[i % len(urls)]))
    for pipe, part in zip(pipes, slices, strict=True):
        pipe.send(("connect", part, max(1, args.concurrency // len(pipes)), not args.no_ack))
    opened = [pipe.recv() for pipe in pipes]
    open_count = sum(o["open"] for o in opened)
    setup_seconds = max(o["finished"] for o in opened) - min(o["started"] for o in opened)
    rate = open_count / setup_seconds if setup_seconds > 0 else 0.0
    time.sleep(3)  # presence flushed (every 2 s), memory settled
    rss_after = sum(rss_kb(pid) for pid in pids)
    per_connection = (rss_after - rss_before) / max(1, open_count)
    print(f"  N={n}: {open_count} open, {sum(o['failed'] for o in opened)} failed "
          f"{[e for o in opened for e in o['errors']][:2]}; set-up {setup_seconds:.1f} s = {rate:.0f} connections/s; "
          f"server RSS {rss_before / 1024:.0f} -> {rss_after / 1024:.0f} MiB = {per_connection:.1f} KiB per connection "
          f"(load {load_before:.2f} before connecting)", flush=True)
    for _ in range(args.warmup):  # not measured: a fresh process's first engage pays its cold caches
        api(urls[0], "POST", f"/api/v1/flags/{FLAG}/kill-switch/", key, {"reason": "warm-up"})
        time.sleep(2)
        api(urls[0], "DELETE", f"/api/v1/flags/{FLAG}/kill-switch/", key, {"rationale": "warm-up"})
        time.sleep(args.pause)
    runs = []
    for repeat in range(args.repeats):
        load = wait_for_load(args.max_load, args.engage_load_wait, f"engage {repeat + 1}")
        for pipe in pipes:
            pipe.send(("arm",))
        for pipe in pipes:
            pipe.recv()
        base = urls[repeat % len(urls)]
        spies = [subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "-p", str(pid), "-r", "500",
                                   "-f", "raw", "-o", f"{args.profile}/{n}-{repeat}-{i}.txt", "-d", "8"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for i, pid in enumerate(pids)] if args.profile else []
        time.sleep(1 if spies else 0)
        t0 = time.time()
        status, body = api(base, "POST", f"/api/v1/flags/{FLAG}/kill-switch/", key, {"reason": "bench"})
        answered = time.time() - t0
        if status != 201:
            raise SystemExit(f"engage answered {status}: {body}")
        for pipe in pipes:
            pipe.send(("collect", t0, args.deadline))
        parts = [pipe.recv() for pipe in pipes]
        latencies = [x for p in parts for x in p["latencies"]]
        missed = sum(p["missed"] for p in parts)
        pushes = []
        for log_path in args.logs:
            for line in log_path.read_text(errors="replace").splitlines():
                if " push production v" in line and "taken at " in line:
                    at = float(line.split("taken at ")[1].split(":")[0])
                    if at >= t0:
                        ms = line.split("written in ")[1].split(" ms")[0]
                        pushes.append(f"taken {(at - t0) * 1000:.0f} ms after t0, written in {ms} ms")
        for spy in spies:
            spy.wait()
        # Sent counts and ACKs are written in batches (about every second): polled until all are in.
        while True:
            _, state = api(base, "GET", f"/api/v1/flags/{FLAG}/kill-switch/?ack_limit=1", key)
            delivery = state["delivery"]
            acked_after = time.time() - t0
            if (delivery["acknowledged"] >= len(latencies) and delivery["sent"] >= len(latencies)) or acked_after > 30:
                break
            time.sleep(0.25)
        run = {"first": min(latencies), "p50": percentile(latencies, 50), "p99": percentile(latencies, 99), "max": max(latencies),
               "missed": missed, "received": len(latencies), "answered": answered, "load": load,
               "online": body["delivery"]["targeted_online"], "sent": delivery["sent"],
               "acked": delivery["acknowledged"], "acked_after": acked_after, "lost": sum(p["lost"] for p in parts)}
        runs.append(run)
        print(f"    engage {repeat + 1} (via process {repeat % len(urls) + 1}, load {load:.2f}): "
              f"first {run['first'] * 1000:.0f} ms, p50 {run['p50'] * 1000:.0f} ms, p99 {run['p99'] * 1000:.0f} ms, max {run['max'] * 1000:.0f} ms, "
              f"received {run['received']}/{open_count}, missed {missed}; engage answered in {answered * 1000:.0f} ms; "
              f"API: online {run['online']}, sent {run['sent']}, acked {run['acked']} "
              f"({run['acked_after']:.1f} s after the call)", flush=True)
        print(f"      server processes: {'; '.join(pushes)}", flush=True)
        status, _ = api(base, "DELETE", f"/api/v1/flags/{FLAG}/kill-switch/", key, {"rationale": "bench"})
        if status != 200:
            raise SystemExit(f"lift answered {status}")
        time.sleep(args.pause)  # the FLAG_UPDATE of the lift delivered and acknowledged
    by_p99 = sorted(runs, key=lambda r: r["p99"])
    return {"n": n, "open": open_count, "rate": rate, "rss_per_connection_kb": per_connection, "runs": runs,
            "median": by_p99[len(by_p99) // 2], "worst": max(runs, key=lambda r: r["max"]), "load_before": load_before}


def prepare(env: dict[str, str], tmp: Path, n: int, mode: str) -> dict[str, Any]:
    import psycopg  # the bench's database, dropped and created afresh

    url = env["DATABASE_URL"]
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    redis_url = env["REDIS_URL"]
    if redis_url.rstrip("/").endswith(("/0", ":6379")):
        raise SystemExit("REDIS_URL must name a database number of the bench's own (it is flushed), e.g. /9")
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    out = tmp / "vehicles.json"
    done = subprocess.run([sys.executable, "-c", SETUP, str(n), mode, str(out)], cwd=ROOT, env=env, check=True,
                          capture_output=True, text=True)
    seconds = json.loads(done.stdout.strip().splitlines()[-1])["registered_seconds"]
    print(f"registered {n} vehicles ({mode}) in {seconds:.1f} s = {n / seconds:.0f} per second", flush=True)
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def start_servers(kind: str, env: dict[str, str], tmp: Path, n: int, stack: ExitStack,
                  args: argparse.Namespace) -> tuple[list[str], list[int]]:
    """Fresh server processes for each N, so that RSS per connection is not the previous N's."""
    urls, pids = [], []
    args.logs = []
    for i in range(args.processes):
        port = free_port()
        args.logs.append(tmp / f"{kind}-{n}-{i}.log")
        log = stack.enter_context(open(args.logs[-1], "wb"))
        proc = subprocess.Popen(server_command(kind, port), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        stack.callback(stop, proc)
        urls.append(f"http://127.0.0.1:{port}")
        pids.append(proc.pid)
    for url in urls:
        for _ in range(150):
            try:
                OPENER.open(url + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
    time.sleep(1)
    return urls, pids


def run_server_kind(kind: str, env: dict[str, str], tmp: Path, data: dict[str, Any], ns: list[int],
                    args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    print(f"{kind}: {args.processes} server processes (fresh for each N), {args.clients} client processes", flush=True)
    for n in ns:
        with ExitStack() as stack:
            urls, pids = start_servers(kind, env, tmp, n, stack, args)
            results.append({"server": kind, **measure_n(urls, pids, data["key"], data["vehicles"], n, args)})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vehicles", default="1000,5000,10000", help="comma-separated N")
    parser.add_argument("--servers", default="daphne", help="daphne, uvicorn or both (comma-separated)")
    parser.add_argument("--processes", type=int, default=2, help="server processes")
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument("--repeats", type=int, default=3, help="engages per N")
    parser.add_argument("--concurrency", type=int, default=400, help="connects in flight, over all clients")
    parser.add_argument("--deadline", type=float, default=10.0, help="seconds after which a vehicle is missed")
    parser.add_argument("--pause", type=float, default=4.0, help="seconds after each lift")
    parser.add_argument("--max-load", type=float, default=1.0)
    parser.add_argument("--load-wait", type=float, default=900.0, help="longest wait for the load before an N")
    parser.add_argument("--engage-load-wait", type=float, default=120.0, help="longest wait before an engage")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured engages (and lifts) first, per N")
    parser.add_argument("--no-ack", action="store_true", help="vehicles do not acknowledge (to see what ACKs cost)")
    parser.add_argument("--profile", default="", help="a folder: py-spy records each server around each engage")
    parser.add_argument("--register", choices=("bulk", "service"), default="bulk")
    args = parser.parse_args()
    ns = [int(x) for x in args.vehicles.split(",")]
    kinds = args.servers.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="ff-killswitch-bench-"))
    env = {k: v for k, v in os.environ.items() if k != "FLEETFLAG_SETTINGS"}
    env.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/ff_bench")
    env.setdefault("REDIS_URL", "redis://127.0.0.1:6379/9")
    env.update(FLEETFLAG_VAR_DIR=str(tmp), DJANGO_SETTINGS_MODULE="fleetflag.settings", PYTHONPATH=str(ROOT),
               PUSH_PREFIX=env.get("PUSH_PREFIX", "ffbench"), LOG_LEVEL="INFO")
    print(f"machine: {os.cpu_count()} cores, load {Path('/proc/loadavg').read_text().split()[:3]}; servers, Redis, "
          f"PostgreSQL and the {args.clients} client processes share these cores", flush=True)
    data = prepare(env, tmp, max(ns), args.register)
    results = []
    for kind in kinds:
        results += run_server_kind(kind, env, tmp, data, ns, args)
    print("\nsummary (engage API call -> KILL_SWITCH received; median run by p99 / worst run by max):")
    print("| server | N | p50 ms | p99 ms | max ms | missed | worst p99 ms | worst max ms | RSS/conn KiB | set-up /s | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        m, w = r["median"], r["worst"]
        loads = "/".join(f"{run['load']:.2f}" for run in r["runs"])
        missed = sum(run["missed"] for run in r["runs"])
        print(f"| {r['server']} x{args.processes} | {r['n']} | {m['p50'] * 1000:.0f} | {m['p99'] * 1000:.0f} | "
              f"{m['max'] * 1000:.0f} | {missed} | {w['p99'] * 1000:.0f} | {w['max'] * 1000:.0f} | "
              f"{r['rss_per_connection_kb']:.1f} | {r['rate']:.0f} | {loads} |")
    print(f"(missed: summed over the {args.repeats} engages; logs in {tmp})")
    checks = []
    for r in results:
        if r["n"] == 5000:
            p99s = [run["p99"] for run in r["runs"]]
            checks.append((f"{r['server']}: p99 <= 250 ms at 5,000 (median run)", statistics.median(p99s) <= 0.25))
        if r["n"] == 10000:
            ok = all(run["missed"] == 0 and run["max"] <= 1.0 for run in r["runs"])
            checks.append((f"{r['server']}: every one of 10,000 within 1 s, none missed (every run)", ok))
    for what, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'} {what}")


if __name__ == "__main__":
    main()
