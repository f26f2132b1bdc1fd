"""Bounded cost outside the regex operator: versions, numbers, lists, contexts.

Whatever a rule's author writes (within validation) and whatever a caller sends as
context, an evaluation neither raises nor does work that grows with the caller's input
beyond reading it once.
"""

from __future__ import annotations

from typing import Any

import pytest

from agent_client import Snapshot
from agent_client.evaluator import CompiledFlag
from agent_client.rules import MAX_LIST, MAX_VARIANTS, validate_rule
from agent_client.semver import MAX_RANGE_COMPARATORS, MAX_VERSION_LENGTH, try_parse_version

VIN = "KMHK381GFNU000001"


def _flag(rule_type: str, conditions: dict[str, Any], **rule: Any) -> CompiledFlag:
    data = {
        "key": "bounded.flag",
        "type": "boolean",
        "default_value": False,
        "enabled": True,
        "safety_level": "ASIL_B",
        "environment": "production",
        "version": 1,
        "ttl_seconds": 600,
        "rules": [
            {"id": 1, "type": rule_type, "priority": 10, "enabled": True, "conditions": conditions, **rule},
        ],
    }
    flag = CompiledFlag(data)  # type: ignore[arg-type]
    assert flag.fixed is None, flag.compile_error
    return flag


def _conditions_errors(rule_type: str, conditions: dict[str, Any]) -> list[str]:
    return validate_rule(flag_type="boolean", rule_type=rule_type, conditions=conditions).get("conditions", [])


# -- versions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sw_version",
    [
        "1" * 5000,  # int() refuses more than 4300 digits with a ValueError
        "2.6.0-" + "1" * 5000,
        "2.6.0-" + "a." * 3000 + "a",
        "2.6.0" + " " * 100_000,
    ],
)
def test_semver_operators__huge_version_in_context__not_a_version_no_error(sw_version: str) -> None:
    # Given rules comparing versions, and a context version far beyond any real one
    target = _flag("vehicle_target", {"sw_version": ">= 1.0.0"})
    attribute = _flag("user_attribute", {"attribute": "sw_version", "operator": "semver_gte", "value": "1.0.0"})
    # Then it is not a version: the rules do not match, and nothing raises
    assert target.evaluate(VIN, {"sw_version": sw_version}).reason == "DEFAULT"
    assert attribute.evaluate(VIN, {"sw_version": sw_version}).reason == "DEFAULT"
    assert try_parse_version(sw_version) is None


def test_semver__version_at_length_cap__still_a_version() -> None:
    version = "2.6.0-" + "a" * (MAX_VERSION_LENGTH - 6)
    assert len(version) == MAX_VERSION_LENGTH
    assert try_parse_version(version) is not None
    assert try_parse_version(version + "a") is None


def test_validate_rule__version_operand_too_long__refused_naming_the_cap() -> None:
    conditions = {"attribute": "v", "operator": "semver_lt", "value": "1." + "0" * MAX_VERSION_LENGTH}
    assert _conditions_errors("user_attribute", conditions) == [
        f"value: a version may have at most {MAX_VERSION_LENGTH} characters, not {MAX_VERSION_LENGTH + 2}"
    ]


def test_validate_rule__range_with_too_many_comparators__refused() -> None:
    sw_version = ", ".join([">= 1.0.0"] * (MAX_RANGE_COMPARATORS + 1))
    assert _conditions_errors("vehicle_target", {"sw_version": sw_version}) == [
        f"sw_version: a version range may have at most {MAX_RANGE_COMPARATORS} comparators"
    ]
    assert _conditions_errors("vehicle_target", {"sw_version": ", ".join([">= 1.0.0"] * MAX_RANGE_COMPARATORS)}) == []


# -- numbers ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [10**400, -(10**400)])
def test_numeric_operators__int_beyond_double_range_in_context__no_match_no_error(value: int) -> None:
    # Given a numeric comparison, and a context number JSON parsers return as a huge int
    flag = _flag("user_attribute", {"attribute": "odometer_km", "operator": "gt", "value": 5})
    # Then it is no number a double can hold: no match, and no OverflowError on the hot path
    assert flag.evaluate(VIN, {"odometer_km": value}).reason == "DEFAULT"


def test_validate_rule__number_value_beyond_double_range__refused_not_raised() -> None:
    errors = validate_rule(flag_type="number", rule_type="vehicle_whitelist", conditions={"vins": [VIN]}, value=10**400)
    assert list(errors) == ["value"]
    assert errors["value"][0].startswith("must be a finite number for a number flag, not 1000")


# -- lists ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule_type", "conditions", "message"),
    [
        (
            "vehicle_whitelist",
            {"vins": [VIN] * (MAX_LIST + 1)},
            f"vins may hold at most {MAX_LIST} entries, not {MAX_LIST + 1}",
        ),
        (
            "vehicle_target",
            {"models": ["ioniq5"] * (MAX_LIST + 1)},
            f"models may hold at most {MAX_LIST} entries, not {MAX_LIST + 1}",
        ),
        (
            "vehicle_target",
            {"regions": ["eu-west"] * (MAX_LIST + 1)},
            f"regions may hold at most {MAX_LIST} entries, not {MAX_LIST + 1}",
        ),
        (
            "user_attribute",
            {"attribute": "trim", "operator": "not_in", "values": ["x"] * (MAX_LIST + 1)},
            f"values may hold at most {MAX_LIST} entries, not {MAX_LIST + 1}",
        ),
        (
            "percentage_rollout",
            {
                "rollout_percentage": 100,
                "variants": [{"key": f"v{i}", "weight": 0.01} for i in range(MAX_VARIANTS + 1)],
            },
            f"variants may hold at most {MAX_VARIANTS} entries, not {MAX_VARIANTS + 1}",
        ),
    ],
)
def test_validate_rule__list_over_cap__refused_naming_list_and_cap(
    rule_type: str, conditions: dict[str, Any], message: str
) -> None:
    assert _conditions_errors(rule_type, conditions) == [message]


def test_validate_rule__lists_at_cap__accepted() -> None:
    vins = [f"KMHK381GFNU{i:06d}" for i in range(MAX_LIST)]
    assert _conditions_errors("vehicle_whitelist", {"vins": vins}) == []
    values = [f"trim-{i}" for i in range(MAX_LIST)]
    assert _conditions_errors("user_attribute", {"attribute": "trim", "operator": "in", "values": values}) == []
    weights = [{"key": f"v{i}", "weight": 1} for i in range(MAX_VARIANTS)]
    assert _conditions_errors("percentage_rollout", {"rollout_percentage": 100, "variants": weights}) == []


# -- contexts ---------------------------------------------------------------------------


def test_evaluate__deep_and_huge_context__only_the_rule_attribute_is_read() -> None:
    # Given a context with a deeply nested value under the targeted attribute and many others
    deep: Any = "leaf"
    for _ in range(100_000):
        deep = [deep]
    context = {f"attr{i}": i for i in range(10_000)} | {"trim": deep, "model": {"nested": deep}}
    snapshot = Snapshot.from_dict(
        {
            "version": 1,
            "flags": [
                {
                    "key": "bounded.flag",
                    "type": "boolean",
                    "default_value": False,
                    "enabled": True,
                    "version": 1,
                    "rules": [
                        {
                            "id": 1,
                            "type": "user_attribute",
                            "priority": 2,
                            "enabled": True,
                            "conditions": {"attribute": "trim", "operator": "not_in", "values": ["base"]},
                        },
                        {
                            "id": 2,
                            "type": "vehicle_target",
                            "priority": 1,
                            "enabled": True,
                            "conditions": {"models": ["ioniq5"]},
                        },
                    ],
                }
            ],
        }  # type: ignore[typeddict-item]
    )
    # Then a list or an object never matches (not even not_in), and nothing walks into it
    assert snapshot.evaluate("bounded.flag", VIN, context).reason == "DEFAULT"
