"""A real daphne serving FleetFlag on 127.0.0.1, with its own SQLite database and local-memory
cache, prepared by ``manage.py migrate`` and ``tests/api/live_setup.py``. The test process's
database and Redis are never touched, so pytest-django's flush is not involved."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DAPHNE = Path(sys.executable).with_name("daphne")


@dataclass
class LiveServer:
    base_url: str
    admin_key: str
    database: Path


def _free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def free_port() -> int:
    """A port nothing listens on now, chosen by the OS (several test runs share the machine)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def live_server(tmp: Path, port: int = 0) -> Iterator[LiveServer]:
    """``port`` is a preference: 0, or a port in use (another run on this machine), takes a free one."""
    if not port or not _free(port):
        port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "FLEETFLAG_SETTINGS")}
    env.update(DATABASE_URL=f"sqlite:///{tmp / 'live.sqlite3'}", FLEETFLAG_VAR_DIR=str(tmp),
               DJANGO_SETTINGS_MODULE="fleetflag.settings", PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    setup = subprocess.run([sys.executable, str(ROOT / "tests/api/live_setup.py")], cwd=ROOT, env=env, check=True,
                           capture_output=True, text=True)
    admin_key = setup.stdout.strip().splitlines()[-1]
    log = open(tmp / "daphne.log", "wb")
    proc = subprocess.Popen([str(DAPHNE), "-b", "127.0.0.1", "-p", str(port), "fleetflag.asgi:application"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"daphne exited: {(tmp / 'daphne.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("daphne did not answer /healthz in 30 s")
            time.sleep(0.2)
        yield LiveServer(base, admin_key, tmp / "live.sqlite3")
    finally:
        stop(proc)
        log.close()


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
