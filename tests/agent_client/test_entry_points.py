"""The evaluator's entry points, called the ways a vehicle's code calls them.

A caller that passes no context, asks for flags the snapshot lacks, or hands over no flag
at all gets a resolution, never an exception; versions at the length limit still compare.
"""

from __future__ import annotations

from typing import Any

import pytest

from agent_client import Snapshot
from agent_client.evaluator import CompiledFlag, evaluate
from agent_client.resolution import ERROR, FLAG_NOT_FOUND, Resolution
from agent_client.semver import MAX_VERSION_LENGTH

VIN = "KMHK381GFNU000001"


def _flag(key: str, *rules: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "key": key,
        "type": "boolean",
        "default_value": False,
        "enabled": True,
        "safety_level": "ASIL_B",
        "environment": "production",
        "version": 3,
        "ttl_seconds": 600,
        "rules": [{"id": n, "priority": 10 * n, "enabled": True, "value": True, **rule} for n, rule in enumerate(rules, 1)],
        **fields,
    }


# Reads the context: a rule that would raise on a context of None.
BY_ODOMETER = {"type": "user_attribute", "conditions": {"attribute": "odometer_km", "operator": "gt", "value": 5}}


def test_evaluate__no_flag__callers_default_as_flag_not_found_without_a_key() -> None:
    assert evaluate(None, VIN, default=7) == Resolution("", 7, None, ERROR, None, FLAG_NOT_FOUND)


def test_evaluate__archived_flag__callers_default_as_flag_not_found_under_its_key() -> None:
    flag = _flag("door.auto_lock", archived=True)
    assert evaluate(flag, VIN, {}, default="x") == Resolution("door.auto_lock", "x", None, ERROR, None, FLAG_NOT_FOUND)  # type: ignore[arg-type]


def test_evaluate__no_context__context_rules_do_not_match_and_nothing_raises() -> None:
    flag = _flag("door.auto_lock", BY_ODOMETER)
    assert evaluate(flag, VIN).reason == "DEFAULT"  # type: ignore[arg-type]
    assert evaluate(flag, VIN, None).reason == "DEFAULT"  # type: ignore[arg-type]
    assert evaluate(flag, VIN, {"odometer_km": 9}).reason == "TARGETING_MATCH"  # type: ignore[arg-type]


def test_snapshot_evaluate_all__no_context__every_flag_resolved_and_nothing_raises() -> None:
    snapshot = Snapshot([_flag("door.auto_lock", BY_ODOMETER), _flag("seat.heat")])  # type: ignore[list-item]
    every = snapshot.evaluate_all(VIN)
    assert {key: r.reason for key, r in every.items()} == {"door.auto_lock": "DEFAULT", "seat.heat": "DEFAULT"}
    assert snapshot.evaluate_all(VIN, {"odometer_km": 9})["door.auto_lock"].reason == "TARGETING_MATCH"


def test_snapshot_evaluate_all__named_keys__each_resolved_under_its_own_key_missing_ones_not_found() -> None:
    snapshot = Snapshot([_flag("door.auto_lock", BY_ODOMETER)])  # type: ignore[list-item]
    picked = snapshot.evaluate_all(VIN, {"odometer_km": 9}, flag_keys=["door.auto_lock", "no.such.flag"])
    assert picked == {
        "door.auto_lock": Resolution("door.auto_lock", True, "enabled", "TARGETING_MATCH", 3),
        "no.such.flag": Resolution("no.such.flag", None, None, ERROR, None, FLAG_NOT_FOUND),
    }
    assert snapshot.evaluate_all(VIN, flag_keys=["door.auto_lock"])["door.auto_lock"].reason == "DEFAULT"


def test_version_in_context__exactly_the_length_limit__still_a_version() -> None:
    at_limit = "2.5.0+" + "b" * (MAX_VERSION_LENGTH - 6)
    assert len(at_limit) == MAX_VERSION_LENGTH
    flag = _flag("door.auto_lock", {"type": "vehicle_target", "conditions": {"sw_version": ">=2.0.0"}})
    assert evaluate(flag, VIN, {"sw_version": at_limit}).reason == "TARGETING_MATCH"  # type: ignore[arg-type]
    assert evaluate(flag, VIN, {"sw_version": at_limit + "b"}).reason == "DEFAULT"  # type: ignore[arg-type]


def _compiled(*rules: dict[str, Any], **fields: Any) -> CompiledFlag:
    return CompiledFlag(_flag("door.auto_lock", *rules, **fields))  # type: ignore[arg-type]


WHITELISTED = {"type": "vehicle_whitelist", "conditions": {"vins": [VIN]}}


def test_compiled_flag__fields_a_hand_written_snapshot_leaves_out__read_with_their_documented_defaults() -> None:
    # No "type": a boolean flag, so the kill switch serves false (not the default of true)
    data = _flag("door.auto_lock", {"type": "kill_switch", "conditions": {"force_disabled": True, "reason": "r"}},
                 default_value=True)
    del data["type"]
    assert CompiledFlag(data).evaluate(VIN).value is False  # type: ignore[arg-type]
    # No "enabled" on the flag: disabled; no "enabled" on a rule: the rule applies
    no_enabled = _flag("door.auto_lock")
    del no_enabled["enabled"]
    assert CompiledFlag(no_enabled).evaluate(VIN).reason == "DISABLED"  # type: ignore[arg-type]
    rule = dict(WHITELISTED, id=1, priority=1, value=True)
    assert CompiledFlag({**_flag("door.auto_lock"), "rules": [rule]}).evaluate(VIN).reason == "TARGETING_MATCH"  # type: ignore[arg-type]
    # No "variant" on a rule: it serves the variant "enabled"
    assert _compiled(WHITELISTED).evaluate(VIN).variant == "enabled"


def test_compiled_flag__attributes__as_the_snapshot_says() -> None:
    flag = _compiled(WHITELISTED, safety_level="ASIL_D")
    assert (flag.key, flag.type, flag.safety_level, flag.version, flag.ttl_seconds) == (
        "door.auto_lock", "boolean", "ASIL_D", 3, 600)
    assert flag.compile_error is None
    assert flag.fixed is None


@pytest.mark.parametrize(
    ("rule", "error"),
    [
        ({"type": "geofence", "conditions": {}}, "unknown rule type 'geofence'"),
        (dict(WHITELISTED, value="yes"), "rule 1: {'value': [\"must be true or false for a boolean flag, not 'yes'\"]}"),
        (dict(WHITELISTED, variant="bad key!"),
         "rule 1: {'variant': [\"must be a short key of letters, digits, '_', '.' or '-'\"]}"),
    ],
)
def test_compiled_flag__rule_it_cannot_read__default_as_parse_error_and_the_reason_kept(
    rule: dict[str, Any], error: str
) -> None:
    flag = _compiled(rule)
    assert flag.evaluate(VIN) == Resolution("door.auto_lock", False, None, ERROR, 3, "PARSE_ERROR")
    assert flag.compile_error == error


def test_compiled_flag__rules_without_priority_or_id__priority_0_and_id_0_in_the_order() -> None:
    first = {"type": "vehicle_whitelist", "enabled": True, "conditions": {"vins": [VIN]}, "value": True, "variant": "a"}
    data = _flag("door.auto_lock")
    # Without a priority a rule counts as priority 0: below 1, tied with 0 and then ordered by id
    data["rules"] = [dict(first, id=1, priority=0, variant="zero"), dict(first, id=2, variant="missing")]
    assert CompiledFlag(data).evaluate(VIN).variant == "zero"  # type: ignore[arg-type]
    data["rules"] = [dict(first, id=1, priority=-1, variant="minus"), dict(first, id=2, variant="missing")]
    assert CompiledFlag(data).evaluate(VIN).variant == "missing"  # type: ignore[arg-type]
    # Without an id a rule counts as id 0: before id 1 at the same priority
    data["rules"] = [dict(first, id=1, priority=5, variant="one"), dict(first, priority=5, variant="no-id")]
    assert CompiledFlag(data).evaluate(VIN).variant == "no-id"  # type: ignore[arg-type]


def test_snapshot__version_and_environment__kept_and_defaulted() -> None:
    assert (Snapshot([]).version, Snapshot([]).environment) == (0, None)
    assert (Snapshot([], version=4, environment="staging").version, Snapshot([], environment="staging").environment) == (
        4, "staging")
    loaded = Snapshot.from_dict({"version": 7, "environment": "staging", "flags": [_flag("seat.heat")]})  # type: ignore[typeddict-item]
    assert (loaded.version, loaded.environment, list(loaded.flags)) == (7, "staging", ["seat.heat"])
    assert (Snapshot.from_dict({}).version, Snapshot.from_dict({}).environment) == (0, None)  # type: ignore[typeddict-item]


def test_snapshot_evaluate__no_context__context_rules_do_not_match_and_nothing_raises() -> None:
    snapshot = Snapshot([_flag("door.auto_lock", BY_ODOMETER)])  # type: ignore[list-item]
    assert snapshot.evaluate("door.auto_lock", VIN).reason == "DEFAULT"


def test_snapshot_evaluate_all__named_keys__the_vin_reaches_each_flag() -> None:
    snapshot = Snapshot([_flag("door.auto_lock", WHITELISTED)])  # type: ignore[list-item]
    assert snapshot.evaluate_all(VIN, flag_keys=["door.auto_lock"])["door.auto_lock"].reason == "TARGETING_MATCH"
    assert snapshot.evaluate_all("KMHK381GFNU000002", flag_keys=["door.auto_lock"])["door.auto_lock"].reason == "DEFAULT"


def test_vehicle_target__every_field_given_must_match() -> None:
    flag = _compiled({"type": "vehicle_target", "conditions": {"models": ["EV6"], "regions": ["EU"]}})
    assert flag.evaluate(VIN, {"model": "EV6", "region": "EU"}).reason == "TARGETING_MATCH"
    assert flag.evaluate(VIN, {"model": "EV6", "region": "US"}).reason == "DEFAULT"
    assert flag.evaluate(VIN, {"model": "EV9", "region": "EU"}).reason == "DEFAULT"
