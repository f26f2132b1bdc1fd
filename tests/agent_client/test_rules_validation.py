"""Rule and value validation, the refusals the agent-only mutation run left alive."""

from __future__ import annotations

from typing import Any

import pytest

from agent_client.rules import validate_rule, value_type_error


@pytest.mark.parametrize(("rule_type", "conditions", "errors"), [
    ("vehicle_whitelist", {}, ["vins is required"]),
    ("vehicle_target", {"models": "ev6", "regions": [1]},
     ["models must be a non-empty list", "regions[0] must be a non-empty string"]),
    ("percentage_rollout", {"rollout_percentage": 10, "variants": []}, ["variants must be a non-empty list"]),
    ("percentage_rollout", {"rollout_percentage": 10, "variants": "a,b"}, ["variants must be a non-empty list"]),
    ("percentage_rollout", {"rollout_percentage": 10, "variants": [1, {"key": 5, "weight": 100, "value": True}]},
     ["variants[0] must be an object with key, weight and value",
      "variants[1].key must be a short key of letters, digits, '_', '.' or '-'"]),
])
def test_validate_rule__malformed_conditions__every_problem_named(
    rule_type: str, conditions: dict[str, Any], errors: list[str]
) -> None:
    assert validate_rule(flag_type="boolean", rule_type=rule_type, conditions=conditions) == {"conditions": errors}


@pytest.mark.parametrize(("value", "error"), [
    ({"gain": [1, None, 2.5], "mode": "eco"}, None),
    (None, None),
    ({1: "a"}, "must be a JSON value"),
    ({"a": {1, 2}}, "must be a JSON value"),
    ([object()], "must be a JSON value"),
])
def test_value_type_error__json_flag__only_json_values(value: Any, error: str | None) -> None:
    assert value_type_error("json", value) == error


def test_value_type_error__unknown_flag_type__names_the_types() -> None:
    assert value_type_error("color", 1) == "unknown flag type 'color' (one of boolean, string, number, json)"
