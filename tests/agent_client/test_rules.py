"""The rule language's validation: every refusal names the field and the sub-path at fault."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from agent_client.rules import validate_rule

VIN = "KMHK381GFNU000001"


def _conditions_errors(rule_type: str, conditions: Any, flag_type: str = "boolean") -> list[str]:
    errors = validate_rule(flag_type=flag_type, rule_type=rule_type, conditions=conditions)
    assert set(errors) <= {"conditions"}, errors
    return errors.get("conditions", [])


@pytest.mark.parametrize(
    ("rule_type", "conditions", "flag_type"),
    [
        ("kill_switch", {"force_disabled": True, "reason": "FSR-12 brake fault"}, "boolean"),
        ("vehicle_whitelist", {"vins": [VIN]}, "boolean"),
        ("vehicle_target", {"models": ["ioniq5"], "sw_version": ">= 2.5.0, < 3", "regions": ["eu-west"]}, "boolean"),
        ("user_attribute", {"attribute": "trim", "operator": "in", "values": ["premium", 1, True]}, "boolean"),
        ("user_attribute", {"attribute": "trim", "operator": "eq", "values": ["premium"]}, "boolean"),
        ("user_attribute", {"attribute": "v", "operator": "semver_lt", "value": "v3.0.0-rc.1+b7"}, "boolean"),
        ("user_attribute", {"attribute": "code", "operator": "regex", "value": "^EU-\\d+$"}, "boolean"),
        ("percentage_rollout", {"rollout_percentage": 12.34, "sticky": True}, "boolean"),
        (
            "percentage_rollout",
            {
                "rollout_percentage": 100,
                "variants": [
                    {"key": "a", "weight": 33.33, "value": "red"},
                    {"key": "b", "weight": 33.33, "value": "green"},
                    {"key": "c", "weight": 33.34},
                ],
            },
            "string",
        ),
    ],
)
def test_validate_rule__valid_conditions__no_errors(rule_type: str, conditions: dict[str, Any], flag_type: str) -> None:
    assert validate_rule(flag_type=flag_type, rule_type=rule_type, conditions=conditions) == {}


def test_validate_rule__weights_not_summing_to_100__refused_with_the_sum() -> None:
    conditions = {"rollout_percentage": 50, "variants": [{"key": "a", "weight": 50}, {"key": "b", "weight": 40}]}
    assert _conditions_errors("percentage_rollout", conditions) == ["variant weights must sum to 100, not 90"]


def test_validate_rule__bad_vin_in_whitelist__refused_naming_its_index() -> None:
    # "I" is not a VIN character (nor are O and Q)
    errors = _conditions_errors("vehicle_whitelist", {"vins": [VIN, "KMHK381GFNU00000I"]})
    assert errors == ["vins[1] 'KMHK381GFNU00000I' is not a VIN (17 characters of A-H, J-N, P, R-Z, 0-9)"]


def test_validate_rule__non_string_in_whitelist__refused_naming_its_index() -> None:
    assert _conditions_errors("vehicle_whitelist", {"vins": [VIN, 5]}) == ["vins[1] must be a non-empty string"]


def test_validate_rule__empty_whitelist__refused() -> None:
    assert _conditions_errors("vehicle_whitelist", {"vins": []}) == ["vins must be a non-empty list"]


def test_validate_rule__unknown_operator__refused_listing_the_operators() -> None:
    errors = _conditions_errors("user_attribute", {"attribute": "trim", "operator": "contains", "value": "x"})
    assert errors == [
        "operator must be one of in, not_in, eq, neq, gt, gte, lt, lte, semver_gte, semver_lt, regex, not 'contains'"
    ]


def test_validate_rule__invalid_regex__refused_naming_value() -> None:
    errors = _conditions_errors("user_attribute", {"attribute": "code", "operator": "regex", "value": "(unclosed"})
    assert errors == ["value is not a valid RE2 regular expression: missing ): (unclosed"]


@pytest.mark.parametrize(
    ("rule_type", "conditions", "message"),
    [
        ("vehicle_whitelist", {"vins": [VIN], "models": ["x"]}, "unknown field(s) models (allowed: vins)"),
        (
            "kill_switch",
            {"force_disabled": True, "reason": "r", "until": "tomorrow"},
            "unknown field(s) until (allowed: force_disabled, reason)",
        ),
        (
            "vehicle_target",
            {"model": ["ioniq5"], "models": ["ioniq5"]},
            "unknown field(s) model (allowed: models, sw_version, regions)",
        ),
        (
            "user_attribute",
            {"attribute": "a", "operator": "eq", "value": 1, "case_insensitive": True},
            "unknown field(s) case_insensitive (allowed: attribute, operator, values, value)",
        ),
        (
            "percentage_rollout",
            {"rollout_percentage": 5, "seed": 7},
            "unknown field(s) seed (allowed: rollout_percentage, sticky, variants)",
        ),
    ],
)
def test_validate_rule__unknown_condition_keys__refused_naming_them(
    rule_type: str, conditions: dict[str, Any], message: str
) -> None:
    assert _conditions_errors(rule_type, conditions) == [message]


def test_validate_rule__sticky_false__refused() -> None:
    errors = _conditions_errors("percentage_rollout", {"rollout_percentage": 50, "sticky": False})
    assert errors == ["sticky must be true: rollouts are always sticky by VIN"]


@pytest.mark.parametrize(
    ("percentage", "message"),
    [
        (12.345, "rollout_percentage may have at most two decimals, not 12.345"),
        (101, "rollout_percentage must be from 0 to 100, not 101"),
        (-1, "rollout_percentage must be from 0 to 100, not -1"),
        ("50", "rollout_percentage must be a number from 0 to 100"),
        (True, "rollout_percentage must be a number from 0 to 100"),
    ],
)
def test_validate_rule__bad_rollout_percentage__refused(percentage: object, message: str) -> None:
    assert _conditions_errors("percentage_rollout", {"rollout_percentage": percentage}) == [message]


def test_validate_rule__variant_weight_with_three_decimals__refused_naming_the_variant() -> None:
    conditions = {
        "rollout_percentage": 100,
        "variants": [{"key": "a", "weight": 50.005}, {"key": "b", "weight": 49.995}],
    }
    assert _conditions_errors("percentage_rollout", conditions) == [
        "variants[0].weight may have at most two decimals, not 50.005",
        "variants[1].weight may have at most two decimals, not 49.995",
    ]


def test_validate_rule__bad_variants__each_problem_names_its_variant() -> None:
    conditions = {
        "rollout_percentage": 50,
        "variants": [{"key": "a", "weight": 50, "value": 1}, {"key": "a", "weight": 50, "colour": "x"}],
    }
    assert _conditions_errors("percentage_rollout", conditions, flag_type="string") == [
        "variants[0].value must be a string for a string flag, not 1",
        "variants[1] has unknown field(s) colour",
        "variants[1].key 'a' is used twice",
    ]


@pytest.mark.parametrize(
    ("sw_version", "message"),
    [
        (">= 2.x", "sw_version: '2.x' is not a semantic version (like 2.5.0 or 3.0.0-rc.1)"),
        ("~> 2.5", "sw_version: '~> 2.5' is not a comparator (use >= > <= < == != and a version)"),
        (">= 2.5,", "sw_version: '' is not a comparator (use >= > <= < == != and a version)"),
        ("", "sw_version: a version range must be a non-empty string like '>= 2.5.0, < 3'"),
        (25, "sw_version: a version range must be a non-empty string like '>= 2.5.0, < 3'"),
    ],
)
def test_validate_rule__bad_sw_version_range__refused_naming_sw_version(sw_version: object, message: str) -> None:
    assert _conditions_errors("vehicle_target", {"sw_version": sw_version}) == [message]


def test_validate_rule__vehicle_target_without_fields__refused() -> None:
    assert _conditions_errors("vehicle_target", {}) == ["give at least one of models, sw_version, regions"]


@pytest.mark.parametrize(
    ("conditions", "message"),
    [
        (
            {"attribute": "v", "operator": "semver_gte", "value": "2.x"},
            "value: '2.x' is not a semantic version (like 2.5.0 or 3.0.0-rc.1)",
        ),
        ({"attribute": "v", "operator": "semver_lt", "value": 3}, "value: a version must be a string, not int"),
        ({"attribute": "n", "operator": "gt", "value": "5"}, "value must be a number for operator gt"),
        ({"attribute": "t", "operator": "in", "value": "x"}, "values must be a non-empty list for operator in"),
        ({"attribute": "t", "operator": "in", "values": [None]}, "values must be strings, numbers or booleans"),
        (
            {"attribute": "t", "operator": "eq", "values": ["a", "b"]},
            "operator eq takes one operand: give value (or values with one item)",
        ),
        ({"attribute": "t", "operator": "eq", "value": None}, "value must be a string, number or boolean"),
        ({"attribute": "t", "operator": "regex", "value": 7}, "value must be a regular expression string"),
        ({"attribute": "", "operator": "eq", "value": "x"}, "attribute is required (the context attribute to test)"),
    ],
)
def test_validate_rule__bad_attribute_operand__refused_naming_it(conditions: dict[str, Any], message: str) -> None:
    assert _conditions_errors("user_attribute", conditions) == [message]


def test_validate_rule__kill_switch_without_reason_or_force__refused() -> None:
    assert _conditions_errors("kill_switch", {"force_disabled": False}) == [
        "force_disabled must be true",
        "reason is required: say why the flag is killed",
    ]


def test_validate_rule__kill_switch_with_value__refused_on_value() -> None:
    errors = validate_rule(
        flag_type="boolean", rule_type="kill_switch", conditions={"force_disabled": True, "reason": "r"}, value=True
    )
    assert errors == {"value": ["a kill switch serves the flag's default value; it takes no value"]}


def test_validate_rule__unknown_rule_type__refused_on_type() -> None:
    errors = validate_rule(flag_type="boolean", rule_type="whitelist", conditions={})
    assert errors == {
        "type": [
            "unknown rule type 'whitelist' (one of kill_switch, vehicle_whitelist, vehicle_target, user_attribute, "
            "percentage_rollout)"
        ]
    }


def test_validate_rule__conditions_not_an_object__refused_on_conditions() -> None:
    errors = validate_rule(flag_type="boolean", rule_type="vehicle_whitelist", conditions=[VIN])
    assert errors == {"conditions": ["must be a JSON object"]}


@pytest.mark.parametrize(
    ("flag_type", "value", "message"),
    [
        ("boolean", "yes", "must be true or false for a boolean flag, not 'yes'"),
        ("string", 1, "must be a string for a string flag, not 1"),
        ("number", True, "must be a finite number for a number flag, not True"),
        ("number", float("nan"), "must be a finite number for a number flag, not nan"),
    ],
)
def test_validate_rule__value_of_wrong_type__refused_on_value(flag_type: str, value: object, message: str) -> None:
    errors = validate_rule(flag_type=flag_type, rule_type="vehicle_whitelist", conditions={"vins": [VIN]}, value=value)
    assert errors == {"value": [message]}


def test_validate_rule__bad_variant_key__refused_on_variant() -> None:
    errors = validate_rule(
        flag_type="boolean", rule_type="vehicle_whitelist", conditions={"vins": [VIN]}, variant="has space"
    )
    assert errors == {"variant": ["must be a short key of letters, digits, '_', '.' or '-'"]}


def test_validate_rule__in_operator_with_a_string_instead_of_a_list__refused() -> None:
    errors = _conditions_errors("user_attribute", {"attribute": "region", "operator": "in", "values": "EU"})
    assert errors == ["values must be a non-empty list for operator in"]


@pytest.mark.parametrize("operator", ["gt", "gte", "lt", "lte"])
def test_validate_rule__comparison_with_a_string_operand__refused_naming_the_operator(operator: str) -> None:
    errors = _conditions_errors("user_attribute", {"attribute": "odometer_km", "operator": operator, "value": "5"})
    assert errors == [f"value must be a number for operator {operator}"]


@pytest.mark.parametrize(
    "operand", [sys.float_info.max, -sys.float_info.max, int(sys.float_info.max), -int(sys.float_info.max)]
)
def test_validate_rule__comparison_with_the_largest_double__accepted(operand: float) -> None:
    conditions = {"attribute": "odometer_km", "operator": "gt", "value": operand}
    assert validate_rule(flag_type="boolean", rule_type="user_attribute", conditions=conditions) == {}


def test_validate_rule__several_unknown_fields__all_named_comma_separated() -> None:
    assert _conditions_errors("vehicle_target", {"models": ["EV6"], "zz": 1, "aa": 2}) == [
        "unknown field(s) aa, zz (allowed: models, sw_version, regions)"
    ]
    rollout = {"rollout_percentage": 50, "variants": [{"key": "a", "weight": 100, "zz": 1, "aa": 2}]}
    assert _conditions_errors("percentage_rollout", rollout) == ["variants[0] has unknown field(s) aa, zz"]


@pytest.mark.parametrize("operand", [int(sys.float_info.max) + 1, -int(sys.float_info.max) - 1])
def test_validate_rule__comparison_with_an_integer_past_the_largest_double__refused(operand: int) -> None:
    conditions = {"attribute": "odometer_km", "operator": "gt", "value": operand}
    assert _conditions_errors("user_attribute", conditions) == ["value must be a number for operator gt"]


def test_validate_rule__vin_with_a_final_newline_in_whitelist__refused() -> None:
    errors = _conditions_errors("vehicle_whitelist", {"vins": [VIN + "\n"]})
    assert errors == [f"vins[0] {VIN + chr(10)!r} is not a VIN (17 characters of A-H, J-N, P, R-Z, 0-9)"]
