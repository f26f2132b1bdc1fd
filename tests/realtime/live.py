"""Real daphne processes serving the vehicle websocket, and a real websocket client.

Two set-ups, each started once per module:

- ``embedded_server``: one daphne with the embedded defaults (its own SQLite file, no Redis,
  the in-process push channel), prepared by ``migrate`` and ``tests/api/live_setup.py``.
- ``redis_cluster``: two daphne processes on this run's PostgreSQL test database and a Redis
  server of the test's own (``redis-server`` on a free port, no persistence), which the test
  stops and starts again; the machine's Redis is never touched.

Everything is done through the servers' own interfaces (the REST API with an ADMIN key, the
websocket), so the servers' state is all that is asserted on.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from tests.api.live import free_port, stop

ROOT = Path(__file__).resolve().parents[2]
DAPHNE = Path(sys.executable).with_name("daphne")
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_vins = count(1)

# Fast timers for the servers under test (the defaults are seconds; tests wait for them).
FAST = {"PUSH_SWEEP_SECONDS": "1", "ACK_FLUSH_SECONDS": "0.2", "PRESENCE_FLUSH_SECONDS": "0.2",
        "PRESENCE_DB_FLUSH_SECONDS": "0.5", "WS_MALFORMED_LIMIT": "5", "DB_CONN_MAX_AGE": "0"}


def new_vin() -> str:
    """A VIN no other test of this run uses (17 characters, no I, O or Q)."""
    return f"KMHWS{os.getpid() % 100000:05d}{next(_vins):07d}"


def daphne_command(port: int) -> list[str]:
    """As docs/realtime.md documents it: an endpoint with a listen backlog."""
    return [str(DAPHNE), "-e", f"tcp:port={port}:backlog=1024:interface=127.0.0.1", "fleetflag.asgi:application"]


@dataclass
class Server:
    base_url: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def ws_base(self) -> str:
        return self.base_url.replace("http://", "ws://")


@dataclass
class Fleet:
    """The servers of one set-up and an ADMIN API key."""

    servers: list[Server]
    admin_key: str = ""
    redis: RedisServer | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def api(self, method: str, path: str, body: Any = None, server: int = 0) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.servers[server].base_url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.admin_key}", "Content-Type": "application/json"})
        try:
            with _OPENER.open(request, timeout=20) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw)
            except ValueError:
                return exc.code, raw

    def register(self, environment: str = "production", vin: str | None = None) -> tuple[str, str]:
        vin = vin or new_vin()
        status, body = self.api("POST", "/api/v1/vehicles/", {"vin": vin, "model": "ev6", "sw_version": "2.9.1",
                                                               "region": "eu-west", "environment": environment})
        assert status == 201, body
        return vin, body["token"]

    def flag(self, key: str, environment: str = "production") -> dict[str, Any]:
        status, body = self.api("POST", "/api/v1/flags/", {"key": key, "name": key, "type": "boolean",
                                                           "default_value": False, "enabled": True,
                                                           "environment": environment})
        assert status == 201, body
        return body

    def kill(self, key: str, reason: str = "brake noise", server: int = 0) -> tuple[int, Any]:
        return self.api("POST", f"/api/v1/flags/{key}/kill-switch/", {"reason": reason}, server=server)

    def delivery(self, key: str, query: str = "") -> dict[str, Any]:
        status, body = self.api("GET", f"/api/v1/flags/{key}/kill-switch/{query}")
        assert status == 200, body
        delivery: dict[str, Any] = body["delivery"]
        return delivery

    def ws_url(self, vin: str, token: str | None = None, server: int = 0, version: int | None = None) -> str:
        query = []
        if token is not None:
            query.append(f"token={token}")
        if version is not None:
            query.append(f"version={version}")
        return f"{self.servers[server].ws_base}/ws/vehicles/{vin}/" + ("?" + "&".join(query) if query else "")

    def wait_for(self, check: Any, timeout: float = 10.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            found = check()
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not reached in {timeout} s (last: {found!r})")
            time.sleep(0.1)


async def vehicle(fleet: Fleet, vin: str, token: str, server: int = 0, version: int | None = None,
                  header: bool = False, compression: str | None = "deflate") -> ClientConnection:
    """An open vehicle socket whose first frame (the SYNC on connect) is not read yet.
    ``compression=None``: no permessage-deflate offered (the websockets client offers it)."""
    if header:
        return await connect(fleet.ws_url(vin, server=server, version=version), proxy=None, open_timeout=10,
                             additional_headers={"Authorization": f"Bearer {token}"}, compression=compression)
    return await connect(fleet.ws_url(vin, token, server=server, version=version), proxy=None, open_timeout=10,
                         compression=compression)


async def frame(ws: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    found: dict[str, Any] = json.loads(raw)
    return found


async def frame_of(ws: ClientConnection, kind: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
    """The next frame of that type (and those field values), skipping others."""
    deadline = time.monotonic() + timeout
    while True:
        found = await frame(ws, max(0.05, deadline - time.monotonic()))
        if found.get("type") == kind and all(found.get(k) == v for k, v in match.items()):
            return found


async def nothing_of(ws: ClientConnection, kind: str, within: float) -> None:
    """No frame of that type arrives within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            found = await frame(ws, max(0.05, deadline - time.monotonic()))
        except TimeoutError:
            return
        assert found.get("type") != kind, found


# -- servers ------------------------------------------------------------------------------------


def _wait_healthy(server: Server, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"daphne exited: {server.log.read_text()[-3000:]}")
        try:
            with _OPENER.open(server.base_url + "/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"daphne did not answer /healthz in {timeout} s: {server.log.read_text()[-3000:]}")


def start_daphne(env: dict[str, str], log_path: Path, stack: ExitStack) -> Server:
    port = free_port()
    log = stack.enter_context(open(log_path, "ab"))
    proc = subprocess.Popen(daphne_command(port), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    stack.callback(stop, proc)
    server = Server(f"http://127.0.0.1:{port}", proc, log_path)
    _wait_healthy(server)
    return server


def uvicorn_command(port: int) -> list[str]:
    """The supported alternative to daphne for the vehicle websockets (docs/scaling.md)."""
    return [str(DAPHNE.with_name("uvicorn")), "fleetflag.asgi:application", "--host", "127.0.0.1", "--port", str(port),
            "--backlog", "1024", "--ws", "websockets-sansio", "--lifespan", "off", "--no-access-log"]


def start_uvicorn(env: dict[str, str], log_path: Path, stack: ExitStack) -> Server:
    port = free_port()
    log = stack.enter_context(open(log_path, "ab"))
    proc = subprocess.Popen(uvicorn_command(port), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    stack.callback(stop, proc)
    server = Server(f"http://127.0.0.1:{port}", proc, log_path)
    _wait_healthy(server)
    return server


def base_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "FLEETFLAG_SETTINGS")}
    env.update(FAST, FLEETFLAG_VAR_DIR=str(tmp), DJANGO_SETTINGS_MODULE="fleetflag.settings", PYTHONPATH=str(ROOT),
               PUSH_PREFIX=f"ffws{os.getpid()}")
    return env


def embedded_server(tmp: Path) -> Iterator[Fleet]:
    env = base_env(tmp)
    env["DATABASE_URL"] = f"sqlite:///{tmp / 'live.sqlite3'}"
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    setup = subprocess.run([sys.executable, str(ROOT / "tests/api/live_setup.py")], cwd=ROOT, env=env, check=True,
                           capture_output=True, text=True)
    with ExitStack() as stack:
        yield Fleet([start_daphne(env, tmp / "daphne.log", stack)], admin_key=setup.stdout.strip().splitlines()[-1])


@dataclass
class RedisServer:
    """A redis-server of the test's own: stopped and started again on the same port."""

    port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "redis-server"
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.dir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise TimeoutError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def command(self, *args: str) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            parts = [f"*{len(args)}\r\n".encode()] + [f"${len(a)}\r\n{a}\r\n".encode() for a in args]
            s.sendall(b"".join(parts))
            return s.recv(65536)


def redis_cluster(tmp: Path, database: dict[str, Any], servers: tuple[str, ...] = ("daphne", "daphne")) -> Iterator[Fleet]:
    """Two server processes (daphne, or the kinds given) on the given PostgreSQL database,
    behind a Redis of the test's own. Their periodic sweep is slow (30 s) so that what arrives
    within a test came by the push channel or by the catch-up that follows a resubscription."""
    redis = RedisServer(free_port(), tmp)
    redis.start()
    auth = database["USER"] + (f":{database['PASSWORD']}" if database["PASSWORD"] else "")
    env = base_env(tmp)
    env["PUSH_SWEEP_SECONDS"] = "30"
    env["PRESENCE_TIMEOUT_SECONDS"] = "3"  # a killed process's vehicles go offline within seconds
    env.update(DATABASE_URL=f"postgres://{auth}@{database['HOST'] or '127.0.0.1'}:{database['PORT'] or 5432}/"
                            f"{database['NAME']}", REDIS_URL=redis.url)
    try:
        with ExitStack() as stack:
            start = {"daphne": start_daphne, "uvicorn": start_uvicorn}
            started = [start[kind](env, tmp / f"{kind}-{i}.log", stack) for i, kind in enumerate(servers, 1)]
            yield Fleet(started, redis=redis, extra={"env": env, "tmp": tmp, "stack": stack})
    finally:
        redis.stop()
