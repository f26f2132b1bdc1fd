"""The two bugs the layout step removed, pinned: one key check (a poll-only key's
``last_used_at`` is written, on the lane's 304 too) and one evaluation input (every
evaluation path answers alike for the same VIN and context, null and missing included)."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace
from typing import Any

import pytest
from django.core.cache import cache

from accounts import keys
from accounts.models import ApiKey
from flags.admin.flag import evaluate_for_vin
from flags.api import hot
from tests.api.conftest import Api
from tests.asgi_client import asgi_request
from tests.factories import FlagFactory, RuleFactory, VehicleFactory

VIN = "KMHPXN00000000001"


def _a_minute_later(monkeypatch: pytest.MonkeyPatch, key: ApiKey) -> None:
    """As if a minute passed since the key was last touched: both latches have lapsed (the
    process's, on the keys module's clock only, so every other cache stays warm; and the
    cluster's, in the shared cache)."""
    base = time.monotonic()
    monkeypatch.setattr(keys, "time", SimpleNamespace(monotonic=lambda: base + keys.TOUCH_INTERVAL_SECONDS + 1))
    cache.delete(f"ff:apikey:touch:{key.pk}")


def _record_quick(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """What the lane's cache-only answer decided, request by request."""
    decided: list[Any] = []
    original = hot.vehicle_sync.quick

    async def recording(headers: dict[bytes, bytes], kwargs: dict[str, Any]) -> Any:
        answer = await original(headers, kwargs)
        decided.append(answer)
        return answer

    monkeypatch.setattr(hot.vehicle_sync, "quick", recording)
    return decided


def test_last_used_at__poll_only_key_on_the_lanes_304__written(committed_db: None, admin_api: Api,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # (committed: the lane looks after its own database connections, as in a server)
    # Given a key that only polls one vehicle's snapshot, its caches warm (a first 200 through the lane)
    VehicleFactory(vin=VIN)
    FlagFactory(key="poll.one")
    auth = {"Authorization": f"Bearer {admin_api.raw}"}
    status, headers, _ = asgi_request("GET", f"/api/v1/vehicles/{VIN}/sync/", auth)
    assert status == 200
    ApiKey.objects.filter(pk=admin_api.key.pk).update(last_used_at=None)
    _a_minute_later(monkeypatch, admin_api.key)
    decided = _record_quick(monkeypatch)
    # When the next poll is the steady-state 304, answered by the lane from its caches
    status, _, _ = asgi_request("GET", f"/api/v1/vehicles/{VIN}/sync/", {**auth, "If-None-Match": headers["etag"]})
    # Then last_used_at is written, and the lane itself answered 304
    assert ApiKey.objects.get(pk=admin_api.key.pk).last_used_at is not None
    assert (status, [answer[0] if answer else None for answer in decided]) == (304, [304])


def test_last_used_at__poll_only_key_through_the_view__written(admin_api: Api, monkeypatch: pytest.MonkeyPatch,
                                                               db: Any) -> None:
    # Given a warm key whose last touch was a minute ago
    VehicleFactory(vin=VIN)
    admin_api.get(f"/api/v1/vehicles/{VIN}/sync/")
    ApiKey.objects.filter(pk=admin_api.key.pk).update(last_used_at=None)
    _a_minute_later(monkeypatch, admin_api.key)
    # When it polls again inside Django (the edge middleware's hot path)
    response = admin_api.get(f"/api/v1/vehicles/{VIN}/sync/")
    # Then last_used_at is written
    assert response.status_code == 200
    assert ApiKey.objects.get(pk=admin_api.key.pk).last_used_at is not None


CONTEXTS = [
    pytest.param({}, id="region-missing"),
    pytest.param({"region": None}, id="region-null"),
    pytest.param({"region": "us-east"}, id="region-given-other"),
    pytest.param({"region": "eu-west", "model": None, "trim": "gt"}, id="mixed"),
]


@pytest.fixture
def targeted(db: Any) -> None:
    VehicleFactory(vin=VIN, model="ev6", region="eu-west", sw_version="2.5.0")
    flag = FlagFactory(key="one.input", type="string", default_value="base")
    RuleFactory(flag=flag, type="vehicle_target", priority=20, conditions={"regions": ["eu-west"], "models": ["ev6"]},
                value="eu-ev6", variant="eu")
    RuleFactory(flag=flag, type="user_attribute", priority=10,
                conditions={"attribute": "trim", "operator": "eq", "values": ["gt"]}, value="gt", variant="gt")


@pytest.mark.parametrize("context", CONTEXTS)
def test_evaluation_paths__same_vin_and_context__same_answer(read_api: Api, targeted: None,
                                                             context: dict[str, Any]) -> None:
    # Given one registered vehicle and one flag targeting its registry attributes
    # When evaluate, evaluate/batch, OFREP and the admin's preview are asked the same question
    single = read_api.post("/api/v1/evaluate/", {"flag_key": "one.input", "vin": VIN, "context": context}).json()
    batch = read_api.post("/api/v1/evaluate/batch/", {"vin": VIN, "context": context}).json()["flags"]["one.input"]
    ofrep = read_api.post("/ofrep/v1/evaluate/flags/one.input", {"context": {"targetingKey": VIN, **context}}).json()
    from flags.models import Flag

    preview = evaluate_for_vin(Flag.objects.get(key="one.input"), VIN, context)
    # Then every path gives the same value, variant and reason
    answers = {
        "evaluate": (single["value"], single["variant"], single["reason"]),
        "batch": (batch["value"], batch["variant"], batch["reason"]),
        "ofrep": (ofrep["value"], ofrep["variant"], ofrep["reason"]),
        "preview": (preview.value, preview.variant, preview.reason),
    }
    assert len(set(answers.values())) == 1, json.dumps(answers)


def test_evaluation_paths__null_attribute__filled_from_the_registry(read_api: Api, targeted: None) -> None:
    # Given the vehicle is registered in eu-west
    # When the caller sends region as null
    single = read_api.post("/api/v1/evaluate/", {"flag_key": "one.input", "vin": VIN,
                                                 "context": {"region": None}}).json()
    from flags.models import Flag

    preview = evaluate_for_vin(Flag.objects.get(key="one.input"), VIN, {"region": None})
    # Then the registry's region applies on both (the rule for eu-west ev6 matches)
    assert (single["value"], preview.value) == ("eu-ev6", "eu-ev6")
    assert preview.filled_from_vehicle == {"region": "eu-west", "model": "ev6", "sw_version": "2.5.0"}
