"""The hot lane (core.http.lane) through a real daphne: the same answers as the views give."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.live import LiveServer, live_server

pytestmark = pytest.mark.live

VIN = "KMHXX00XXXX000001"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(Path(tmp_path_factory.mktemp("lane")), port=8028) as live:
        yield live


def call(server: LiveServer, method: str, path: str, body: Any = None, **headers: str) -> tuple[int, Any, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(server.base_url + path, data=data, method=method, headers={
        "Authorization": f"Bearer {server.admin_key}", "Content-Type": "application/json", **headers})
    try:
        with _OPENER.open(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def test_lane_sync__poll__200_then_304_with_headers(server: LiveServer) -> None:
    status, headers, body = call(server, "GET", f"/api/v1/vehicles/{VIN}/sync/")
    assert status == 200
    assert [f["key"] for f in json.loads(body)["flags"]] == ["adas.tuning", "battery.minutes", "brake.v2",
                                                               "nav.engine", "ui.dark-mode"]
    etag = headers["ETag"]
    for _ in range(3):  # the first poll may take the view, the next ones the short cut
        status, again, content = call(server, "GET", f"/api/v1/vehicles/{VIN}/sync/", **{
            "If-None-Match": etag, "X-Request-ID": "poll-1"})
        assert (status, content, again["ETag"], again["Cache-Control"], again["X-Request-ID"]) == \
            (304, b"", etag, "no-cache", "poll-1")
        assert again["X-Content-Type-Options"] == "nosniff"


def test_lane_sync__stale_etag__200(server: LiveServer) -> None:
    status, _, body = call(server, "GET", f"/api/v1/vehicles/{VIN}/sync/", **{"If-None-Match": '"old"'})
    assert status == 200 and json.loads(body)["flags"]


def test_lane_sync__bad_key__401_json(server: LiveServer) -> None:
    request = urllib.request.Request(f"{server.base_url}/api/v1/vehicles/{VIN}/sync/",
                                     headers={"Authorization": "Bearer ffk_nothere0_" + "x" * 43, "If-None-Match": "*"})
    try:
        _OPENER.open(request, timeout=10)
        raise AssertionError("expected 401")
    except urllib.error.HTTPError as exc:
        assert exc.code == 401
        assert json.loads(exc.read())["error"]["code"] == "invalid_api_key"


def test_lane_evaluate__registered_vehicle__targeting_match(server: LiveServer) -> None:
    status, headers, body = call(server, "POST", "/api/v1/evaluate/", {"flag_key": "nav.engine", "vin": VIN})
    assert status == 200
    assert json.loads(body) == {"flag_key": "nav.engine", "value": "graph-v2", "variant": "new",
                                "reason": "TARGETING_MATCH", "version": 2}
    assert headers["Content-Type"] == "application/json"


def test_lane_batch__same_question_twice__same_answer(server: LiveServer) -> None:
    question = {"vin": VIN, "context": {"climate": "arctic"}}
    first = call(server, "POST", "/api/v1/evaluate/batch/", question)
    second = call(server, "POST", "/api/v1/evaluate/batch/", question)
    assert first[0] == second[0] == 200
    assert first[2] == second[2]
    flags = json.loads(first[2])["flags"]
    assert flags["battery.minutes"] == {"value": 35, "variant": "cold", "reason": "TARGETING_MATCH", "version": 2}
    assert flags["brake.v2"]["reason"] == "KILL_SWITCH"


def test_lane_batch__invalid__400_fields(server: LiveServer) -> None:
    status, _, body = call(server, "POST", "/api/v1/evaluate/batch/", {"vin": "nope"})
    assert status == 400
    assert list(json.loads(body)["error"]["fields"]) == ["vin"]


def test_lane_batch__body_over_limit__413(server: LiveServer) -> None:
    status, _, body = call(server, "POST", "/api/v1/evaluate/batch/", {"vin": VIN, "pad": "x" * (1024 * 1024)})
    assert status == 413
    assert json.loads(body)["error"]["code"] == "payload_too_large"


def test_lane_metrics__after_sync__counted(server: LiveServer) -> None:
    call(server, "GET", f"/api/v1/vehicles/{VIN}/sync/")
    with _OPENER.open(server.base_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    assert 'fleetflag_http_requests_total{route="api/v1/vehicles/<str:vin>/sync/",method="GET",status="200"}' in text
