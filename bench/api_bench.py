"""FleetFlag's API beside the Unleash server (8.2), one after the other on the same core.

    .venv/bin/python bench/api_bench.py [--duration 8] [--skip-unleash]

Ours: PostgreSQL database ``ff_bench`` (recreated), Redis db 9 as the cache, 100 flags
(rollout 50 % + region IN + semver rule, like the peer's), one daphne pinned to core 1.
Theirs: ``bench/unleash/unleash_peer.py`` with 100 comparable flags, node pinned to core 1.
wrk runs on core 0 (``apt-get install -y wrk`` if it is missing).

Pairs: vehicle sync 200 vs ``/api/client/features``; sync 304 vs the same with
``If-None-Match``; ``evaluate/batch`` (100 flags, a random VIN from 1,000 per request, each
seen once before the clock runs, as a polling fleet) vs ``/api/frontend`` (100 flags
evaluated for one context). At 1 and 32 connections. An extra, unjudged row sends a context
never seen before on every request, so that no batch answer is reused (the evaluation cost).
PASS when our req/s >= 1.5x theirs on each pair, and our p99 < 50 ms at 32 connections.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = ROOT / ".venv" / "bin" / "python"
DAPHNE = ROOT / ".venv" / "bin" / "daphne"
HOST = "127.0.0.1"
PORT = 8021
UNLEASH_PORT = 8027
DB = "ff_bench"
REDIS_URL = "redis://127.0.0.1:6379/9"
SERVER_CPU = "1"
WRK_CPU = "0"
VIN = "KMHBENCH000000001"
CONNECTIONS = (1, 32)
RATIO = 1.5
P99_MS = 50.0
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def request(method: str, url: str, headers: dict[str, str], body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with _OPENER.open(req, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


# -- wrk ---------------------------------------------------------------------------------------


def lua_script(tmp: Path, method: str, headers: dict[str, str], body: bytes | None, vins: list[str] | None) -> Path:
    lines = ["wrk.method = " + json.dumps(method)]
    for name, value in headers.items():
        lines.append(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}")
    if vins:
        template = (body or b"").decode()
        before, after = template.split("__VIN__")
        lines.append("local vins = {" + ",".join(json.dumps(v) for v in vins) + "}")
        lines.append(f"local before, after = {json.dumps(before)}, {json.dumps(after)}")
        lines.append("math.randomseed(42)")
        lines.append("local n = 0")
        lines.append("request = function() n = n + 1; local b = before .. vins[math.random(#vins)] .. after; "
                     "return wrk.format(nil, nil, nil, (string.gsub(b, '__N__', tostring(n)))) end")
    elif body:
        lines.append("wrk.body = " + json.dumps(body.decode()))
    path = tmp / f"script-{random.randrange(1 << 30)}.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def wrk(url: str, script: Path, connections: int, duration: int) -> dict[str, float]:
    cmd = ["taskset", "-c", WRK_CPU, "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script),
           url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"50%\s+([\d.]+\w+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50": p50, "p99": p99, "non2xx": float(non2xx.group(1)) if non2xx else 0.0,
            "socket_errors": 1.0 if errors else 0.0}


def measure(name: str, spec: tuple[str, str, dict[str, str], bytes | None], tmp: Path, duration: int,
            vins: list[str] | None = None, expect: int = 200) -> dict[int, dict[str, float]]:
    method, url, headers, body = spec
    probe_body = body.replace(b"__VIN__", vins[0].encode()).replace(b"__N__", b"0") if (vins and body) else body
    status, _, content = request(method, url, headers, probe_body)
    if status != expect:
        raise RuntimeError(f"{name}: {method} {url} -> {status}, expected {expect}: {content[:300]!r}")
    if vins and body:
        # A fleet polls again and again: every VIN has been seen once before the clock runs.
        for vin in vins:
            request(method, url, headers, body.replace(b"__VIN__", vin.encode()).replace(b"__N__", b"0"))
    script = lua_script(tmp, method, headers, body, vins)
    results = {}
    for connections in CONNECTIONS:
        wrk(url, script, connections, 2)  # warm-up
        results[connections] = wrk(url, script, connections, duration)
        r = results[connections]
        log(f"  {name:<24} c={connections:<3} {r['rps']:>9.1f} req/s  p50 {r['p50']:>7.2f} ms  "
            f"p99 {r['p99']:>7.2f} ms  bytes={len(content)}")
        if r["non2xx"]:
            raise RuntimeError(f"{name}: {int(r['non2xx'])} unexpected responses under load")
    return results


# -- our server -----------------------------------------------------------------------------------


def prepare_ours(env: dict[str, str]) -> str:
    import psycopg
    from psycopg import sql

    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB)))
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    subprocess.run([str(PY), "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    out = subprocess.run([str(PY), "bench/api_bench_setup.py"], cwd=ROOT, env=env, check=True, capture_output=True,
                         text=True).stdout
    return out.strip().splitlines()[-1]


def start_ours(env: dict[str, str], tmp: Path) -> subprocess.Popen[bytes]:
    logfile = open(tmp / "daphne.log", "wb")
    proc = subprocess.Popen(
        ["setpriv", "--pdeathsig", "TERM", "--", "taskset", "-c", SERVER_CPU, str(DAPHNE), "-v", "0",
         "-b", HOST, "-p", str(PORT), "fleetflag.asgi:application"],
        cwd=ROOT, env=env, stdout=logfile, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if request("GET", f"http://{HOST}:{PORT}/healthz", {})[0] == 200:
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"daphne did not start; see {tmp / 'daphne.log'}")


def run_ours(tmp: Path, duration: int) -> dict[str, dict[int, dict[str, float]]]:
    env = {k: v for k, v in os.environ.items() if k not in ("FLEETFLAG_SETTINGS",)}
    env.update(DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{DB}", REDIS_URL=REDIS_URL, LOG_LEVEL="WARNING",
               DJANGO_SETTINGS_MODULE="fleetflag.settings", FLEETFLAG_VAR_DIR=str(tmp), PYTHONPATH=str(ROOT))
    log("FleetFlag: preparing ff_bench (migrate + 100 flags) ...")
    key = prepare_ours(env)
    proc = start_ours(env, tmp)
    try:
        auth = {"Authorization": f"Bearer {key}"}
        base = f"http://{HOST}:{PORT}"
        sync_url = f"{base}/api/v1/vehicles/{VIN}/sync/"
        _, headers, body = request("GET", sync_url, auth)
        etag = {k.lower(): v for k, v in headers.items()}["etag"]
        flags = len(json.loads(body)["flags"])
        log(f"FleetFlag: daphne pid {proc.pid} on core {SERVER_CPU}; snapshot {len(body)} bytes, {flags} flags")
        rng = random.Random(7)
        alphabet = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
        vins = ["".join(rng.choice(alphabet) for _ in range(17)) for _ in range(1000)]
        batch = json.dumps({"vin": "__VIN__", "context": {"region": "eu-west", "sw_version": "2.5.0",
                                                          "model": "ev6"}}).encode()
        # The same question with a context never seen before (trip = request number): no
        # answer can be reused, every flag is evaluated and serialised.
        fresh = json.dumps({"vin": "__VIN__", "context": {"region": "eu-west", "sw_version": "2.5.0",
                                                          "model": "ev6", "trip": "__N__"}}).encode()
        return {
            "sync": measure("sync 200", ("GET", sync_url, auth, None), tmp, duration),
            "sync_304": measure("sync 304", ("GET", sync_url, {**auth, "If-None-Match": etag}, None), tmp, duration,
                                expect=304),
            "batch": measure("evaluate/batch", ("POST", f"{base}/api/v1/evaluate/batch/",
                                                {**auth, "Content-Type": "application/json"}, batch),
                             tmp, duration, vins=vins),
            "batch_fresh": measure("evaluate/batch fresh ctx", ("POST", f"{base}/api/v1/evaluate/batch/",
                                                                {**auth, "Content-Type": "application/json"}, fresh),
                                   tmp, duration, vins=vins),
        }
    finally:
        proc.terminate()
        proc.wait(10)


# -- Unleash -----------------------------------------------------------------------------------------


def run_unleash(tmp: Path, duration: int) -> dict[str, dict[int, dict[str, float]]]:
    sys.path.insert(0, str(ROOT / "bench" / "unleash"))
    import unleash_peer as up

    up.ensure_installed()
    box: dict[str, Any] = {}
    ready, done = threading.Event(), threading.Event()

    def keeper() -> None:
        # start() ties node's life to the thread that started it (pdeathsig): keep this one alive.
        try:
            box["handle"] = up.start(port=UNLEASH_PORT, cpu=SERVER_CPU, reset_db=True)
        except Exception as exc:  # noqa: BLE001 - reported by the caller
            box["error"] = exc
        ready.set()
        done.wait()
        if "handle" in box:
            box["handle"].stop()

    thread = threading.Thread(target=keeper, name="unleash-keeper")
    thread.start()
    ready.wait()
    try:
        if "error" in box:
            raise box["error"]
        handle = box["handle"]
        log(f"Unleash: pid {handle.pid} on core {SERVER_CPU}; seeding 100 flags ...")
        up.seed_flags(handle, n=100)
        specs = up.endpoints(handle)
        _, _, body = request("GET", specs["client_features"].url, specs["client_features"].headers)
        log(f"Unleash: /api/client/features {len(body)} bytes, {len(json.loads(body)['features'])} flags")
        return {
            "sync": measure("client/features 200", tuple(specs["client_features"]), tmp, duration),  # type: ignore[arg-type]
            "sync_304": measure("client/features 304", tuple(specs["client_features_304"]), tmp, duration,  # type: ignore[arg-type]
                                expect=304),
            "batch": measure("frontend", tuple(specs["frontend"]), tmp, duration),  # type: ignore[arg-type]
        }
    finally:
        done.set()
        thread.join(30)


# -- report ---------------------------------------------------------------------------------------------

PAIRS = [("sync", "vehicles/{vin}/sync/ 200", "/api/client/features 200", True),
         ("sync_304", "vehicles/{vin}/sync/ 304", "/api/client/features 304", True),
         ("batch", "evaluate/batch/ (100 flags)", "/api/frontend (100 flags)", True),
         ("batch_fresh", "  same, never-seen context", "/api/frontend (100 flags)", False)]


def report(ours: dict[str, Any], theirs: dict[str, Any] | None) -> bool:
    ok = True
    print()
    print(f"{'FleetFlag':<28} {'Unleash 8.2':<26} {'c':>3} {'ours req/s':>11} {'theirs':>9} {'ratio':>6} "
          f"{'ours p50':>9} {'ours p99':>9} {'their p99':>10}  verdict")
    for name, label_ours, label_theirs, judged in PAIRS:
        for c in CONNECTIONS:
            o = ours[name][c]
            t = theirs[name.replace("_fresh", "")][c] if theirs else None
            ratio = o["rps"] / t["rps"] if t else float("nan")
            verdicts = [] if judged else ["(information: answers not reused)"]
            if t is not None and judged:
                verdicts.append(f"ratio>={RATIO} {'PASS' if ratio >= RATIO else 'FAIL'}")
                ok &= ratio >= RATIO
            if c == 32 and judged:
                verdicts.append(f"p99<{P99_MS:.0f}ms {'PASS' if o['p99'] < P99_MS else 'FAIL'}")
                ok &= o["p99"] < P99_MS
            print(f"{label_ours:<28} {label_theirs:<26} {c:>3} {o['rps']:>11.1f} "
                  f"{(t['rps'] if t else float('nan')):>9.1f} {ratio:>6.2f} {o['p50']:>7.2f}ms {o['p99']:>7.2f}ms "
                  f"{(t['p99'] if t else float('nan')):>8.2f}ms  {', '.join(verdicts)}")
    print()
    print("OVERALL", "PASS" if ok else "FAIL")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=8, help="seconds per measurement (after a 2 s warm-up)")
    parser.add_argument("--skip-unleash", action="store_true")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install -y wrk", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="ff-api-bench-") as tmpdir:
        tmp = Path(tmpdir)
        started = time.monotonic()
        ours = run_ours(tmp, args.duration)
        theirs = None if args.skip_unleash else run_unleash(tmp, args.duration)
        ok = report(ours, theirs)
        print(f"(run took {time.monotonic() - started:.0f} s; server core {SERVER_CPU}, wrk core {WRK_CPU}, "
              f"wrk -t1, {args.duration} s per point after a 2 s warm-up)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
