"""The evaluator's entry points, called the ways a vehicle's code calls them.

A caller that passes no context, asks for flags the snapshot lacks, or hands over no flag
at all gets a resolution, never an exception; versions at the length limit still compare.
"""

from __future__ import annotations

from typing import Any

from agent_client import Snapshot
from agent_client.evaluator import evaluate
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
