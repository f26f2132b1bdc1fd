"""The shared evaluation cases (``tests/cases/evaluation*.json``) on every path.

One evaluator, fed two ways (STYLE habit 6): the snapshot JSON straight into
``agent_client``, and rows in the database mapped by ``flags.snapshots``. Each case must
give its expected result on the first path and exactly the same result on the second,
and the vehicle's ``LocalFlags`` must agree with both.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from agent_client import LocalFlags, Resolution, Snapshot, evaluate
from flags import snapshots
from flags.models import Flag, Rule

CASES_DIR = Path(__file__).resolve().parents[1] / "cases"
ENVIRONMENT = "production"
SYNCED_AT = 1_800_000_000.0  # a fixed clock: LocalFlags must not read the wall clock here


def _load_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    for path in sorted(CASES_DIR.glob("evaluation*.json")):
        cases += json.loads(path.read_text())["cases"]
    return cases


CASES = _load_cases()
WITH_VIN = [case for case in CASES if isinstance(case["vin"], str)]


def _name(case: dict[str, Any]) -> str:
    return str(case["name"])


def _flag_key(case: dict[str, Any]) -> str:
    flag = case["flag"]
    return str(flag["key"] if flag is not None else case["flag_key"])


def _snapshot(case: dict[str, Any]) -> Snapshot:
    flags = [case["flag"]] if case["flag"] is not None else []
    return Snapshot.from_dict({"environment": ENVIRONMENT, "version": 1, "flags": flags})


def _json_path(case: dict[str, Any]) -> Resolution:
    return _snapshot(case).evaluate(_flag_key(case), case["vin"], case["context"], case.get("default"))


def _outcome(resolution: Resolution) -> dict[str, Any]:
    outcome = {"value": resolution.value, "variant": resolution.variant, "reason": resolution.reason}
    if resolution.error_code is not None:
        outcome["error_code"] = resolution.error_code
    return outcome


def _canonical(data: Any) -> str:
    # JSON text, not ==: in Python True == 1 and 1 == 1.0, and the cases are about JSON types.
    return json.dumps(data, sort_keys=True)


# -- the suite itself ----------------------------------------------------------------------


def test_cases__suite__at_least_80_uniquely_named_cases() -> None:
    names = [_name(case) for case in CASES]
    assert len(names) >= 80
    assert sorted(set(names)) == sorted(names)


def test_cases__expectations__well_formed() -> None:
    for case in CASES:
        assert set(case) <= {"name", "note", "flag_key", "flag", "vin", "context", "default", "expect"}, case["name"]
        assert set(case["expect"]) <= {"value", "variant", "reason", "error_code"}, case["name"]
        assert {"value", "variant", "reason"} <= set(case["expect"]), case["name"]
        assert (case["flag"] is None) == ("flag_key" in case), case["name"]


# -- path 1: snapshot JSON -> agent_client ---------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=_name)
def test_case__snapshot_json__expected_result(case: dict[str, Any]) -> None:
    # Given the flag as snapshot JSON / When it is evaluated for the case's VIN and context
    result = _json_path(case)
    # Then value, variant, reason and error code are exactly the expected ones
    assert _canonical(_outcome(result)) == _canonical(case["expect"])
    assert result.flag_key == _flag_key(case)
    # An unknown or archived flag has no version; a flag that cannot compile keeps its own
    expected_version = None if case["expect"].get("error_code") == "FLAG_NOT_FOUND" else case["flag"]["version"]
    assert result.version == expected_version


@pytest.mark.parametrize("case", CASES, ids=_name)
def test_case__one_shot_evaluate__same_outcome_as_snapshot(case: dict[str, Any]) -> None:
    # When the flag JSON is evaluated without a Snapshot (agent_client.evaluate)
    result = evaluate(case["flag"], case["vin"], case["context"], case.get("default"))
    # Then it gives the same outcome
    assert _canonical(_outcome(result)) == _canonical(case["expect"])


@pytest.mark.parametrize("case", [c for c in CASES if c["flag"] and len(c["flag"]["rules"]) > 1], ids=_name)
def test_case__rules_listed_in_reverse__same_result(case: dict[str, Any]) -> None:
    # Given the same flag with its rules in the opposite order: the order in the JSON must
    # not matter, the evaluator sorts by priority and rule id itself
    reversed_case = copy.deepcopy(case)
    reversed_case["flag"]["rules"].reverse()
    # Then the result is the same
    assert _json_path(reversed_case) == _json_path(case)


# -- path 2: ORM rows -> flags.snapshots -> agent_client ---------------------------------------


def _store(flag: dict[str, Any]) -> dict[int, int]:
    """Write the case's flag and rules as rows; returns case rule id -> database id.

    Rules are inserted in ascending case id, so the database ids keep their order and
    ties on priority resolve the same way on both paths.
    """
    row = Flag.objects.create(
        key=flag["key"],
        name=flag["key"],
        type=flag["type"],
        default_value=flag["default_value"],
        enabled=flag["enabled"],
        safety_level=flag["safety_level"],
        environment=flag["environment"],
        version=flag["version"],
        ttl_seconds=flag["ttl_seconds"],
        archived_at=timezone.now() if flag.get("archived") else None,
    )
    ids: dict[int, int] = {}
    for rule in sorted(flag["rules"], key=lambda r: r["id"]):
        ids[rule["id"]] = Rule.objects.create(
            flag=row,
            type=rule["type"],
            priority=rule["priority"],
            enabled=rule["enabled"],
            conditions=rule["conditions"],
            value=rule.get("value"),
            variant=rule["variant"],
        ).pk
    assert [ids[i] for i in sorted(ids)] == sorted(ids.values()), "database ids must keep the case's order"
    return ids


def _with_ids(flag: dict[str, Any], ids: dict[int, int]) -> dict[str, Any]:
    mapped = copy.deepcopy(flag)
    for rule in mapped["rules"]:
        rule["id"] = ids[rule["id"]]
    return mapped


@pytest.mark.django_db
@pytest.mark.parametrize("case", CASES, ids=_name)
def test_case__orm_through_flags_snapshots__same_result_as_json(case: dict[str, Any]) -> None:
    # Given the case's flag and rules as database rows
    if case["flag"] is not None:
        ids = _store(case["flag"])
        # Then the mapper gives back exactly the case's snapshot JSON (rule ids remapped)
        row = Flag.objects.get(key=case["flag"]["key"])
        assert _canonical(snapshots.flag_to_dict(row)) == _canonical(_with_ids(case["flag"], ids))
    # When the server evaluates through the published snapshot of the environment
    result = snapshots.compiled(ENVIRONMENT).evaluate(
        _flag_key(case), case["vin"], case["context"], case.get("default")
    )
    # Then the result is identical to the JSON path's, version included
    assert _canonical(result.as_dict()) == _canonical(_json_path(case).as_dict())
    assert _canonical(_outcome(result)) == _canonical(case["expect"])


# -- the vehicle: LocalFlags with a fixed VIN and context ------------------------------------------


def _local(case: dict[str, Any]) -> LocalFlags:
    return LocalFlags(
        _snapshot(case), vin=case["vin"], context=case["context"], synced_at=SYNCED_AT, clock=lambda: SYNCED_AT + 1
    )


@pytest.mark.parametrize("case", WITH_VIN, ids=_name)
def test_case__local_flags_within_ttl__same_result_as_json(case: dict[str, Any]) -> None:
    # Given a vehicle that synced the flag a second ago
    local = _local(case)
    key, default = _flag_key(case), case.get("default")
    expected = _canonical(_json_path(case).as_dict())
    # Then the precomputed path and the full path (extra, unrelated context) both agree
    assert _canonical(local.evaluate(key, default=default).as_dict()) == expected
    assert _canonical(local.evaluate(key, default=default, context={"probe": 1}).as_dict()) == expected
    assert _canonical(local.get_value(key, default)) == _canonical(case["expect"]["value"])


@pytest.mark.parametrize("case", [c for c in WITH_VIN if isinstance(c["expect"]["value"], bool)], ids=_name)
def test_case__local_flags_is_enabled__expected_boolean(case: dict[str, Any]) -> None:
    # Given a vehicle that synced the flag a second ago
    local = _local(case)
    value = case["expect"]["value"]
    # When is_enabled is asked with a fallback opposite to the answer (unless the case is
    # about the caller's default), the answer cannot have come from the fallback
    fallback = case["default"] if "default" in case else not value
    # Then it answers the case's boolean
    assert local.is_enabled(_flag_key(case), fallback) is value
