"""The hot lane's steady-state poll (``fleetflag.asgi.application``, in process): a 304 decided
from the per-process caches still refuses a revoked or expired key, and its 429 says when to
come back.

The lane only short-cuts a poll when the key is in the process's key cache, the vehicle in its
vehicle memo and the snapshot's ETag in hand; so each test warms those with real polls first.
Committed transactions: the lane looks after its own database connection on a cache miss.

Each test here was written against a deliberate break of the rule it names (the break is in
the commit message) and fails on it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import async_to_sync

from accounts.models import ApiKey
from accounts.services import api_key_create, api_key_expire, api_key_revoke
from core.actors import Actor
from tests.factories import FlagFactory, VehicleFactory

VIN = "KMHXX00XXXX000001"
SYNC = f"/api/v1/vehicles/{VIN}/sync/"
SYSTEM = Actor.for_system("tests")

Answer = tuple[int, dict[str, str], bytes]


def get(path: str, raw_key: str, **headers: str) -> Answer:
    """One GET through the ASGI application, as daphne would send it."""
    from fleetflag.asgi import application

    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    header_list = [(b"authorization", f"Bearer {raw_key}".encode())]
    header_list += [(name.lower().replace("_", "-").encode(), value.encode()) for name, value in headers.items()]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": header_list, "client": ("192.0.2.7", 40000), "server": ("testserver", 80)}
    async_to_sync(application)(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}, body


def code_of(answer: Answer) -> tuple[int, str | None]:
    status, _, body = answer
    return status, json.loads(body)["error"]["code"] if body else None


def warm(raw_key: str) -> str:
    """Poll until the lane answers from its caches: a 200 (loads key, vehicle, snapshot), then a 304."""
    status, headers, _ = get(SYNC, raw_key)
    assert status == 200
    etag = headers["etag"]
    status, headers, body = get(SYNC, raw_key, if_none_match=etag)
    assert (status, body, headers["etag"]) == (304, b"", etag)
    return etag


@pytest.fixture
def vehicle(committed_db: None) -> None:
    VehicleFactory(vin=VIN)
    FlagFactory(key="ui.dark-mode")


@pytest.mark.parametrize(("end", "code"), [(api_key_revoke, "api_key_revoked"), (api_key_expire, "api_key_expired")])
def test_lane_sync_poll__key_ended_after_warm_304__401_every_time_and_not_touched(
    vehicle: None, end: Callable[..., ApiKey], code: str
) -> None:
    # Given an ADMIN key whose polls the lane answers with 304 from its caches
    key, raw = api_key_create(actor=SYSTEM, name="fleet-sync", role="ADMIN")
    etag = warm(raw)
    last_used = ApiKey.objects.get(pk=key.pk).last_used_at
    # When the key is revoked (or expired) and the vehicle keeps polling with its ETag
    end(actor=SYSTEM, api_key=key)
    answers = [code_of(get(SYNC, raw, if_none_match=etag)) for _ in range(3)]
    # Then every poll is refused, the cached ones included, and the key's use is not recorded
    assert answers == [(401, code)] * 3
    assert ApiKey.objects.get(pk=key.pk).last_used_at == last_used


def _clear_of_the_minute() -> None:
    """The rate limit counts in fixed one-minute windows: start well inside one."""
    left = 60 - time.time() % 60
    if left < 3:
        time.sleep(left + 0.1)


def test_lane_sync_poll__over_rate_limit_on_cached_304__429_with_retry_after(vehicle: None) -> None:
    # Given an ADMIN key allowed one request a minute, whose first poll loaded every cache
    _, raw = api_key_create(actor=SYSTEM, name="slow-sync", role="ADMIN", rate_limit_per_min=1)
    _clear_of_the_minute()
    status, headers, _ = get(SYNC, raw)
    assert status == 200
    # When it polls again with the current ETag (the lane's cached 304 path)
    answer = get(SYNC, raw, if_none_match=headers["etag"], x_request_id="poll-2")
    # Then 429 rate_limited, with Retry-After: whole seconds, at most the window
    status, again, _ = answer
    assert code_of(answer) == (429, "rate_limited")
    retry_after = again.get("retry-after")
    assert retry_after is not None and re.fullmatch(r"[1-9][0-9]*", retry_after), retry_after
    assert 1 <= int(retry_after) <= 60
    assert again["x-request-id"] == "poll-2"


@pytest.mark.parametrize("raw", ["ffk_garbage", "ffk_abcdefgh_" + "x" * 43, "not-a-key"])
def test_lane_sync_poll__unknown_or_malformed_key_on_a_warm_lane__401_every_time(vehicle: None, raw: str) -> None:
    # Given a lane that answers the poll from its caches, and a key the key cache knows is missing
    _, good = api_key_create(actor=SYSTEM, name="poller", role="ADMIN")
    etag = warm(good)
    # Then a 304 poll with it is refused, the first time (database) and from the cache after
    for _ in range(3):
        assert code_of(get(SYNC, raw, if_none_match=etag)) == (401, "invalid_api_key")
