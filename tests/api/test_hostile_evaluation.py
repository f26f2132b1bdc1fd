"""Hostile rules and contexts on every evaluation path, through the real ASGI stack: patterns
that backtrack in other engines, huge lists, long and odd strings. Nothing answers 5xx and
nothing takes long (the per-evaluation bound itself is proven in
tests/agent_client/test_regex_bounds.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flags.models import Rule
from tests.api.conftest import Api
from tests.asgi_client import asgi_request
from tests.factories import FlagFactory, VehicleFactory

VIN = "KMHHV000000000001"


def _post(api: Api, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    status, _, content = asgi_request("POST", path, {"Authorization": f"Bearer {api.raw}",
                                                     "Content-Type": "application/json"},
                                      body=json.dumps(body).encode())
    return status, json.loads(content)


@pytest.fixture
def flag(db: Any) -> Any:
    VehicleFactory(vin=VIN)
    return FlagFactory(key="hv.flag", type="string", default_value="safe")


BACKTRACKING = ["(a+)+$", "(a|a)*$", "(a*)*b", "(.*a){20}", "((a|aa)+)+c", "(x+x+)+y", "^(\\w+\\s?)*$"]
LONG_VALUES = ["a" * 50 + "!", "a" * 128, "a" * 100_000, "\u00e9" * 5000, "x" * 10 + "\u202e" + "y" * 20]


@pytest.mark.parametrize("pattern", BACKTRACKING)
def test_regex_rule__backtracking_pattern__linear_and_every_path_answers(write_api: Api, read_api: Api, flag: Any,
                                                                        pattern: str) -> None:
    # Given a rule with a pattern that backtracks exponentially in a backtracking engine
    status, created = _post(write_api, "/api/v1/flags/hv.flag/rules/", {
        "type": "user_attribute", "conditions": {"attribute": "trim", "operator": "regex", "values": [pattern]},
        "value": "matched"})
    assert status == 201, created
    # When every evaluation path is asked with long hostile values
    for value in LONG_VALUES:
        context = {"trim": value}
        single = _post(read_api, "/api/v1/evaluate/", {"flag_key": "hv.flag", "vin": VIN, "context": context})
        batch = _post(read_api, "/api/v1/evaluate/batch/", {"vin": VIN, "context": context})
        ofrep = _post(read_api, "/ofrep/v1/evaluate/flags/hv.flag", {"context": {"targetingKey": VIN, **context}})
        # Then each answers 200 (values past the length cap never match: the flag's default)
        assert (single[0], batch[0], ofrep[0]) == (200, 200, 200), (single, batch, ofrep)
        if len(value) > 128:
            assert single[1]["value"] == batch[1]["flags"]["hv.flag"]["value"] == ofrep[1]["value"] == "safe"


@pytest.mark.parametrize("pattern,problem", [
    ("(a)\\1", "backreference"),
    ("(?=a)a", "lookahead"),
    ("(?<!a)b", "lookbehind"),
    ("a{1000}{1000}", "repetition"),
    ("x" * 300, "long"),
    ("[", "invalid"),
])
def test_regex_rule__unsafe_or_invalid_pattern__400_naming_conditions(write_api: Api, flag: Any, pattern: str,
                                                                     problem: str) -> None:
    before = Rule.objects.count()
    status, answer = _post(write_api, "/api/v1/flags/hv.flag/rules/", {
        "type": "user_attribute", "conditions": {"attribute": "trim", "operator": "regex", "values": [pattern]}})
    assert (status, answer["error"]["code"]) == (400, "validation_error"), answer
    assert "conditions" in answer["error"]["fields"]
    assert Rule.objects.count() == before


@pytest.mark.parametrize("conditions", [
    {"vins": [f"KMHHV{i:012d}" for i in range(10_001)]},
    {"attribute": "trim", "operator": "in", "values": [f"v{i}" for i in range(10_001)]},
])
def test_rule__list_past_the_cap__400_nothing_saved(write_api: Api, flag: Any, conditions: dict[str, Any]) -> None:
    before = Rule.objects.count()
    rule_type = "vehicle_whitelist" if "vins" in conditions else "user_attribute"
    status, answer = _post(write_api, "/api/v1/flags/hv.flag/rules/", {"type": rule_type, "conditions": conditions})
    assert (status, answer["error"]["code"]) == (400, "validation_error")
    assert Rule.objects.count() == before


def test_rule__more_than_the_cap_per_flag__400(write_api: Api, flag: Any, settings: Any) -> None:
    settings.FLAG_MAX_RULES = 3
    for i in range(3):
        assert _post(write_api, "/api/v1/flags/hv.flag/rules/", {
            "type": "vehicle_whitelist", "conditions": {"vins": [f"KMHHV{i:012d}"]}})[0] == 201
    status, answer = _post(write_api, "/api/v1/flags/hv.flag/rules/", {
        "type": "vehicle_whitelist", "conditions": {"vins": ["KMHHV000000000009"]}})
    assert (status, answer["error"]["code"]) == (400, "validation_error")
    assert Rule.objects.filter(flag=flag).count() == 3


@pytest.mark.parametrize("context", [
    {"sw_version": "9" * 5000},
    {"sw_version": "1." * 3000 + "0"},
    {"n": 10 ** 400},
    {"n": -(10 ** 300)},
    {f"attr{i}": "x" for i in range(5000)},
    {"region": "\u202e\u200b" * 1000},
])
def test_evaluate__odd_context__200_or_refused_never_5xx(read_api: Api, flag: Any, context: dict[str, Any]) -> None:
    # Given a flag with a version range and a numeric comparison
    from core.actors import Actor
    from flags import services

    system = Actor.for_system("tests")
    services.rule_create(actor=system, flag="hv.flag", type="vehicle_target", conditions={"sw_version": ">= 2.0.0"},
                         value="v2")
    services.rule_create(actor=system, flag="hv.flag", type="user_attribute", value="big",
                         conditions={"attribute": "n", "operator": "gt", "values": [1]})
    for path, body in [("/api/v1/evaluate/", {"flag_key": "hv.flag", "vin": VIN, "context": context}),
                       ("/api/v1/evaluate/batch/", {"vin": VIN, "context": context}),
                       ("/ofrep/v1/evaluate/flags", {"context": {"targetingKey": VIN, **context}})]:
        status, answer = _post(read_api, path, body)
        assert status in (200, 400), (path, status, answer)


@pytest.mark.parametrize("vin", [VIN + "\n", VIN + "\r\n", "\n" + VIN, VIN[:-1] + "\u0661"])
def test_evaluate__vin_with_a_line_break_or_non_ascii_digit__400_on_every_path(read_api: Api, flag: Any,
                                                                               vin: str) -> None:
    # A VIN followed by a newline used to pass the check (``$`` matches before a final newline)
    for path, body in [("/api/v1/evaluate/", {"flag_key": "hv.flag", "vin": vin}),
                       ("/api/v1/evaluate/batch/", {"vin": vin}),
                       ("/ofrep/v1/evaluate/flags", {"context": {"targetingKey": vin}})]:
        status, answer = _post(read_api, path, body)
        assert status == 400, (path, status, answer)
    status, _, _ = asgi_request("GET", f"/api/v1/vehicles/{VIN}%0A/sync/", {"Authorization": f"Bearer {read_api.raw}"})
    assert status in (400, 403), status
