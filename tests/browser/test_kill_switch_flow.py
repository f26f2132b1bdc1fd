"""End to end: a SAFETY engineer presses the kill-switch button in Chromium, a connected test
vehicle receives the KILL_SWITCH frame and acknowledges it, and the flag page's delivery
counter shows it live; the webhook receiver gets the notification.

The server is a real daphne (the websocket needs it; pytest-django's live server speaks only
HTTP) with the embedded defaults and its own SQLite database, as ``tests/realtime`` starts it;
its data is made through the services by ``kill_switch_setup.py``. Screenshots at 1280x800 are
saved under the test's temporary directory (the path is printed)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.realtime.live import ROOT, Server, base_env, start_daphne

pytestmark = [pytest.mark.browser, pytest.mark.live]

PASSWORD = "test-password"
REASON = "INC-4711: route engine crash on ev6"
VIEWPORT = {"width": 1280, "height": 800}


@dataclass
class Hooks:
    """The webhook receiver: every JSON body it was sent."""

    received: list[dict[str, Any]] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)


@dataclass
class Site:
    server: Server
    flag_id: int
    vin: str
    token: str
    hooks: Hooks
    shots: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = Path(tmp_path_factory.mktemp("kill-switch-browser"))
    hooks = Hooks()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            hooks.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()
            hooks.arrived.set()

        def log_message(self, *args: Any) -> None:
            pass

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    env = base_env(tmp)
    env.update(DATABASE_URL=f"sqlite:///{tmp / 'browser.sqlite3'}",
               KILL_SWITCH_WEBHOOK_URLS=f"http://127.0.0.1:{receiver.server_address[1]}/hooks/kill",
               KILL_SWITCH_WEBHOOK_RETRY_INTERVALS="1,1")
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    setup = subprocess.run([sys.executable, str(ROOT / "tests/browser/kill_switch_setup.py")], cwd=ROOT, env=env,
                           check=True, capture_output=True, text=True)
    data = json.loads(setup.stdout.strip().splitlines()[-1])
    shots = tmp / "screenshots"
    shots.mkdir()
    print(f"\nscreenshots: {shots}")
    try:
        with ExitStack() as stack:
            # The links in notifications point at this server.
            server = start_daphne({**env, "FLEETFLAG_PUBLIC_URL": "http://fleetflag.test"}, tmp / "daphne.log", stack)
            yield Site(server, data["flag_id"], data["vin"], data["token"], hooks, shots)
    finally:
        receiver.shutdown()
        receiver.server_close()


class SocketVehicle:
    """A vehicle on the websocket, in a thread of its own: connects, reads its SYNC, then waits
    for a KILL_SWITCH frame and acknowledges its version; stays connected until stopped."""

    def __init__(self, site: Site) -> None:
        self.url = f"{site.server.ws_base}/ws/vehicles/{site.vin}/?token={site.token}"
        self.connected = threading.Event()
        self.killed = threading.Event()
        self.stop = threading.Event()
        self.frames: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="test vehicle", daemon=True)

    def __enter__(self) -> SocketVehicle:
        self.thread.start()
        assert self.connected.wait(20), self.error
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)

    def _run(self) -> None:
        try:
            asyncio.run(self._drive())
        except BaseException as exc:  # noqa: BLE001 - reported to the test through self.error
            self.error = exc
            self.connected.set()

    async def _drive(self) -> None:
        async with connect(self.url, proxy=None, open_timeout=10) as ws:
            self.frames.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
            self.connected.set()
            while not self.stop.is_set():
                try:
                    frame = json.loads(await asyncio.wait_for(ws.recv(), 0.2))
                except TimeoutError:
                    continue
                self.frames.append(frame)
                if frame.get("type") == "KILL_SWITCH":
                    await ws.send(json.dumps({"type": "ACK", "version": frame["version"]}))
                    self.killed.set()


def log_in(page: Any) -> None:
    page.goto("/admin/login/")
    page.fill("#id_username", "sam-safety")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r"/admin/$"))


def test_kill_switch_button__vehicle_receives_and_acks__counter_shows_it__webhook_sent(
        site: Site, chromium: Any) -> None:
    context = chromium.new_context(base_url=site.server.base_url, viewport=VIEWPORT)
    context.set_default_timeout(15_000)
    page = context.new_page()
    try:
        with SocketVehicle(site) as vehicle:
            assert vehicle.frames[0]["type"] == "SYNC"
            page.wait_for_timeout(700)  # presence is flushed every 0.2 s: the vehicle counts as online
            # Given a SAFETY engineer on the flag page, which has one red kill-switch button at the top
            log_in(page)
            page.goto(f"/admin/flags/flag/{site.flag_id}/change/")
            button = page.locator("#ff-kill-button")
            assert button.inner_text().strip().upper() == "ENGAGE KILL SWITCH…"
            box = button.bounding_box()
            assert box is not None and box["y"] + box["height"] < VIEWPORT["height"] / 2  # above the fold
            assert "rgb(198, 40, 40)" in button.evaluate("b => getComputedStyle(b).backgroundColor")
            page.screenshot(path=site.shots / "01-flag-page.png")

            # When they press it: a page that names the flag and what it reaches, asks a reason and a tick
            button.click()
            page.wait_for_selector("#ff-kill-form")
            row = page.locator("#ff-kill-targets tr[data-key='nav.route-v3']")
            assert re.sub(r"\s+", " ", row.inner_text()).strip().endswith(
                "Production 1 1 enabled, version 1: will be killed")
            page.screenshot(path=site.shots / "02-confirm-page.png")
            # A reason alone is not enough: the unticked confirmation box stops the submit (and the
            # server refuses a form without it: tests/admin)
            page.fill("#id_text", REASON)
            confirm_url = page.url
            page.click("#ff-confirm")
            assert page.eval_on_selector("#id_confirm", "box => box.validity.valueMissing") is True
            assert not vehicle.killed.wait(1.0) and page.url == confirm_url
            page.screenshot(path=site.shots / "03-not-confirmed.png")
            page.check("#id_confirm")
            page.click("#ff-confirm")

            # Then the flag page says what is known: committed, pushed, who was online
            page.wait_for_selector(".messagelist")
            message = page.inner_text(".messagelist")
            assert "Kill switch engaged on nav.route-v3 (flag version 2)." in message
            assert "1 of the 1 registered in production was online at the engage" in message
            assert "Kill switch engaged." in page.inner_text("#ff-killed-banner")
            page.screenshot(path=site.shots / "04-engaged.png")

            # And the vehicle received the signed frame with the flag and the reason, and acknowledged it
            assert vehicle.killed.wait(15), (vehicle.error, vehicle.frames)
            kill = next(f for f in vehicle.frames if f.get("type") == "KILL_SWITCH")
            assert (kill["flag_key"], kill["reason"]) == ("nav.route-v3", REASON)
            assert {"version", "sent_at", "kid", "sig"} <= set(kill)

            # And the delivery counter climbs on the open page, without a reload
            page.wait_for_function(
                "() => document.querySelector('#ff-delivery-sent').textContent.trim() === '1'"
                " && document.querySelector('#ff-delivery-acknowledged').textContent.trim() === '1'",
                timeout=20_000)
            counts = {field: page.inner_text(f"#ff-delivery [data-field={field}]").strip()
                      for field in ("targeted_vehicles", "targeted_online", "sent", "acknowledged")}
            assert counts == {"targeted_vehicles": "1", "targeted_online": "1", "sent": "1", "acknowledged": "1"}
            page.screenshot(path=site.shots / "05-delivered.png")

        # And the webhook receiver got the notification, linking to the flag page
        assert site.hooks.arrived.wait(15)
        [hook] = site.hooks.received
        lines = hook["text"].splitlines()
        assert lines[0] == "Kill switch ENGAGED: nav.route-v3 in production"
        assert f"Reason: {REASON}" in lines and "Engaged by: sam-safety" in lines
        assert "Targeted: 1 vehicle registered, 1 online at the engage" in lines
        assert f"Flag page: http://fleetflag.test/admin/flags/flag/{site.flag_id}/change/" in lines
    finally:
        context.close()
