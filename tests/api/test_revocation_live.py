"""Revocation across processes: two real daphne servers sharing this test run's PostgreSQL
database and Redis. A key that works on both is revoked through the API on server 1; server 2
must refuse it within the documented bound (docs/api.md, "Revoking a key":
``API_KEY_LOCAL_CACHE_SECONDS``, 2 s, after the commit) on every path — the DRF views, the hot
evaluate and vehicle sync views, and the steady-state 304 poll the hot lane answers from its
per-process caches (core.http.lane.HotLane).

The servers are started once for the module on free ports chosen at run time; the data is made
by this process through the services, committed (``committed_db``), so the servers see it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.api.live import free_port, stop

pytestmark = pytest.mark.live

ROOT = Path(__file__).resolve().parents[2]
DAPHNE = Path(sys.executable).with_name("daphne")
VIN = "KMHXX00XXXX000001"
# The documented bound, passed to the servers explicitly so that the test and they agree.
LOCAL_CACHE_SECONDS = 2.0
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Server:
    base_url: str
    log: Path

    def call(self, method: str, path: str, key: str, body: Any = None, **headers: str) -> tuple[int, Any, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {key}", "Content-Type": "application/json", **headers})
        try:
            with _OPENER.open(request, timeout=10) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()


def _start(env: dict[str, str], log_path: Path, stack: ExitStack) -> Server:
    """One daphne on a free port (a port taken between choosing and binding: try another)."""
    for _ in range(3):
        port = free_port()
        log = stack.enter_context(open(log_path, "wb"))
        proc = subprocess.Popen([str(DAPHNE), "-b", "127.0.0.1", "-p", str(port), "fleetflag.asgi:application"],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        stack.callback(stop, proc)
        server = Server(f"http://127.0.0.1:{port}", log_path)
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                with _OPENER.open(server.base_url + "/healthz", timeout=1) as response:
                    if response.status == 200:
                        return server
            except OSError:
                time.sleep(0.2)
        if proc.poll() is None:
            raise TimeoutError(f"daphne did not answer /healthz in 60 s: {log_path.read_text()[-2000:]}")
    raise RuntimeError(f"daphne did not start: {log_path.read_text()[-2000:]}")





@pytest.fixture(scope="module")
def servers(django_db_setup: Any,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server] | None]:
    from django.conf import settings
    from django.db import connection

    if connection.vendor != "postgresql" or not settings.REDIS_URL:
        yield None  # the tests' require_postgres / require_redis skip them (fail them in CI)
        return
    db = connection.settings_dict  # the test database pytest-django made and migrated
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    tmp = Path(tmp_path_factory.mktemp("revocation"))
    env = {k: v for k, v in os.environ.items() if k not in ("FLEETFLAG_SETTINGS",)}
    env.update(DATABASE_URL=f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
               REDIS_URL=settings.REDIS_URL, FLEETFLAG_VAR_DIR=str(tmp), DJANGO_SETTINGS_MODULE="fleetflag.settings",
               PYTHONPATH=str(ROOT), API_KEY_LOCAL_CACHE_SECONDS=str(LOCAL_CACHE_SECONDS), DB_CONN_MAX_AGE="0")
    with ExitStack() as stack:
        yield _start(env, tmp / "daphne-1.log", stack), _start(env, tmp / "daphne-2.log", stack)


@pytest.fixture
def fleet(require_postgres: None, require_redis: None, committed_db: None,
          servers: tuple[Server, Server] | None) -> dict[str, str]:
    """A registered vehicle, a flag, the raw keys: ``ops`` (an ADMIN key) and ``engineer`` (a key
    bound to an ADMIN+SAFETY engineer, so it may also sync vehicles)."""
    from accounts.services import api_key_create
    from core.actors import Actor
    from flags import services
    from tests.factories import UserFactory
    from vehicles.models import Vehicle

    system = Actor.for_system("live-test setup")
    Vehicle.objects.create(vin=VIN, model="ev6", sw_version="2.9.1", region="us-east")
    services.flag_create(actor=system, key="ui.dark-mode", name="Dark mode", type="boolean", default_value=False,
                         enabled=True)
    engineer = UserFactory(username="safety-lead", role="ADMIN,SAFETY")
    _, ops = api_key_create(actor=system, name="ops", role="ADMIN")
    _, own = api_key_create(actor=Actor.for_user(engineer), name="safety-lead-script", user=engineer)
    return {"ops": ops, "engineer": own, "prefix": own.split("_")[1]}


def _paths(server: Server, key: str, etag: str) -> dict[str, Callable[[], tuple[int, Any, bytes]]]:
    """Every way in that authenticates the key: DRF, the hot views, and the lane's 304 short cut."""
    return {
        "flags list": lambda: server.call("GET", "/api/v1/flags/", key),
        "evaluate": lambda: server.call("POST", "/api/v1/evaluate/", key, {"flag_key": "ui.dark-mode", "vin": VIN}),
        "sync 200": lambda: server.call("GET", f"/api/v1/vehicles/{VIN}/sync/", key),
        "sync 304": lambda: server.call("GET", f"/api/v1/vehicles/{VIN}/sync/", key, **{"If-None-Match": etag}),
    }


def _warm(server: Server, key: str) -> dict[str, Callable[[], tuple[int, Any, bytes]]]:
    """Use the key on every path (so each cache holds it) and check that it works; the paths."""
    status, headers, _ = server.call("GET", f"/api/v1/vehicles/{VIN}/sync/", key)
    assert status == 200
    paths = _paths(server, key, headers["ETag"])
    expected = {"flags list": 200, "evaluate": 200, "sync 200": 200, "sync 304": 304}
    for _ in range(3):  # the first 304 may take the view; the next ones the lane's short cut
        assert {name: call()[0] for name, call in paths.items()} == expected
    return paths


def _code(answer: tuple[int, Any, bytes]) -> tuple[int, str | None]:
    status, _, body = answer
    return status, json.loads(body)["error"]["code"] if status >= 400 and body else None


def _refused_within_bound(paths: dict[str, Callable[[], tuple[int, Any, bytes]]], since: float,
                          code: str) -> dict[str, float]:
    """Poll every path until it refuses with ``code``; seconds after ``since`` at which each did.

    Then the property itself: a request sent once the bound has passed is refused on every path."""
    refused_at: dict[str, float] = {}
    while len(refused_at) < len(paths) and time.monotonic() < since + LOCAL_CACHE_SECONDS:
        for name, call in paths.items():
            if name not in refused_at:
                sent = time.monotonic()
                answer = call()
                if _code(answer) == (401, code):
                    refused_at[name] = sent - since
                else:
                    assert answer[0] in (200, 304), (name, _code(answer))
        time.sleep(0.05)
    while time.monotonic() < since + LOCAL_CACHE_SECONDS:
        time.sleep(0.01)
    assert {name: _code(call()) for name, call in paths.items()} == {name: (401, code) for name in paths}
    return refused_at


def test_revoke_on_server_1__server_2_refuses_within_local_cache_seconds(
    servers: tuple[Server, Server], fleet: dict[str, str], record_property: Any
) -> None:
    one, two = servers
    # Given the engineer's key works on both servers, on every path (both servers cache it)
    _warm(one, fleet["engineer"])
    on_two = _warm(two, fleet["engineer"])
    # When an ADMIN key revokes it through the API on server 1
    status, _, body = one.call("POST", f"/api/v1/api-keys/{fleet['prefix']}/revoke/", fleet["ops"])
    committed = time.monotonic()  # the answer comes after the commit
    assert (status, json.loads(body)["state"]) == (200, "revoked")
    # Then server 1 refuses it at once ...
    assert _code(one.call("POST", "/api/v1/evaluate/", fleet["engineer"], {"flag_key": "x", "vin": VIN})) == (
        401, "api_key_revoked")
    # ... and server 2 within API_KEY_LOCAL_CACHE_SECONDS, on every path, the 304 poll included
    refused_at = _refused_within_bound(on_two, committed, "api_key_revoked")
    record_property("server_2_refused_after_seconds", refused_at)
    print(f"server 2 refused the revoked key after (s): {refused_at}")
    # and the ADMIN key that revoked it still works on both
    assert one.call("GET", "/api/v1/flags/", fleet["ops"])[0] == two.call("GET", "/api/v1/flags/", fleet["ops"])[0] \
        == 200


def test_deactivate_user__both_servers_refuse_key_within_local_cache_seconds(
    servers: tuple[Server, Server], fleet: dict[str, str], record_property: Any
) -> None:
    from django.contrib.auth import get_user_model

    from accounts.services import user_set_active
    from core.actors import Actor

    one, two = servers
    # Given the engineer's key works on both servers
    paths = {f"1 {name}": call for name, call in _warm(one, fleet["engineer"]).items()}
    paths |= {f"2 {name}": call for name, call in _warm(two, fleet["engineer"]).items()}
    # When an ADMIN deactivates the engineer (in this process: neither server took part)
    user_set_active(actor=Actor.for_system("tests"), user=get_user_model().objects.get(username="safety-lead"),
                    active=False)
    committed = time.monotonic()
    # Then both servers refuse the key within the bound, as inactive
    refused_at = _refused_within_bound(paths, committed, "api_key_inactive")
    record_property("refused_after_seconds", refused_at)
    print(f"servers refused the deactivated user's key after (s): {refused_at}")
