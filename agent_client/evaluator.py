"""The flag evaluator (SPEC §2 "Evaluation"), the only one in FleetFlag.

Input is the snapshot JSON the server publishes (``flags.snapshots`` builds it from the
ORM; vehicles receive it by sync)::

    {"environment": "production", "version": 42,
     "flags": [{"key", "type", "default_value", "enabled", "version", "ttl_seconds",
                "safety_level", "archived"?, "rules": [{"id", "type", "priority", "enabled",
                "conditions", "value"?, "variant"?}, ...]}, ...]}

Order: archived/unknown -> ERROR FLAG_NOT_FOUND; an enabled kill switch -> KILL_SWITCH;
disabled -> DISABLED; enabled rules by priority (highest first, ties by id) -> the first
match, TARGETING_MATCH or SPLIT; otherwise DEFAULT.

A flag is compiled once per snapshot; results that do not depend on the VIN are built
ahead of time, so most evaluations allocate nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from agent_client.rules import (
    RULE_TYPES,
    compile_condition,
    in_rollout,
    pick_variant,
    rollout_thresholds,
    validate_rule,
)

KILL_SWITCH = "KILL_SWITCH"
DISABLED = "DISABLED"
TARGETING_MATCH = "TARGETING_MATCH"
SPLIT = "SPLIT"
DEFAULT = "DEFAULT"
ERROR = "ERROR"
STALE = "STALE"

FLAG_NOT_FOUND = "FLAG_NOT_FOUND"
PARSE_ERROR = "PARSE_ERROR"
TYPE_MISMATCH = "TYPE_MISMATCH"

_EMPTY: Mapping[str, Any] = {}


class Resolution(NamedTuple):
    flag_key: str
    value: Any
    variant: str | None
    reason: str
    version: int | None
    error_code: str | None = None

    def as_dict(self) -> dict[str, Any]:
        data = {
            "flag_key": self.flag_key,
            "value": self.value,
            "variant": self.variant,
            "reason": self.reason,
            "version": self.version,
        }
        if self.error_code is not None:
            data["error_code"] = self.error_code
        return data


class CompiledFlag:
    """One flag, ready to evaluate. Built from the snapshot JSON of the flag."""

    __slots__ = (
        "_default",
        "_fixed",
        "_rules",
        "compile_error",
        "data",
        "default_value",
        "key",
        "safety_level",
        "ttl_seconds",
        "type",
        "version",
    )

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data
        self.key: str = data["key"]
        self.type: str = data.get("type", "boolean")
        self.default_value: Any = data.get("default_value")
        self.version: int | None = data.get("version")
        self.ttl_seconds: int | None = data.get("ttl_seconds")
        self.safety_level: str | None = data.get("safety_level")
        self.compile_error: str | None = None
        self._rules: tuple[Any, ...] = ()
        rules = [r for r in data.get("rules") or () if r.get("enabled", True)]
        kill = next((r for r in rules if r.get("type") == "kill_switch"), None)
        # The result for every VIN, when the flag's outcome does not depend on it.
        self._fixed: Resolution | None = None
        if kill is not None:
            killed_value = False if self.type == "boolean" else self.default_value
            self._fixed = Resolution(self.key, killed_value, "killed", KILL_SWITCH, self.version)
        elif not data.get("enabled", False):
            self._fixed = Resolution(self.key, self.default_value, "disabled", DISABLED, self.version)
        else:
            try:
                self._rules = tuple(self._compile_rule(r) for r in sorted(rules, key=_rule_order))
            except (KeyError, TypeError, ValueError) as exc:
                # A rule this evaluator cannot read (a newer rule type, damaged data, a
                # pattern without its engine): serve the default rather than guess at what
                # the rule meant.
                self._fixed = Resolution(self.key, self.default_value, None, ERROR, self.version, PARSE_ERROR)
                self.compile_error = str(exc)
        self._default = Resolution(self.key, self.default_value, "default", DEFAULT, self.version)

    def _compile_rule(self, rule: Mapping[str, Any]) -> Any:
        rule_type = rule["type"]
        if rule_type not in RULE_TYPES:
            raise ValueError(f"unknown rule type {rule_type!r}")
        conditions = rule.get("conditions") or {}
        problems = validate_rule(
            flag_type=self.type,
            rule_type=rule_type,
            conditions=conditions,
            value=rule.get("value"),
            variant=rule.get("variant") or "enabled",
        )
        if problems:
            raise ValueError(f"rule {rule.get('id')}: {problems}")
        value = rule.get("value")
        if value is None:
            value = True if self.type == "boolean" else self.default_value
        variant = rule.get("variant") or "enabled"
        if rule_type == "percentage_rollout":
            return self._compile_rollout(conditions, value, variant)
        hit = Resolution(self.key, value, variant, TARGETING_MATCH, self.version)
        predicate = compile_condition(rule_type, conditions)
        return lambda vin, ctx: hit if predicate(vin, ctx) else None

    def _compile_rollout(self, conditions: Mapping[str, Any], value: Any, variant: str) -> Any:
        key = self.key
        threshold, bounds = rollout_thresholds(conditions)
        if not bounds:
            hit = Resolution(key, value, variant, SPLIT, self.version)
            return lambda vin, ctx: hit if vin and in_rollout(key, vin, threshold) else None
        picks = tuple(
            (upper, Resolution(key, v["value"] if v.get("value") is not None else value, v["key"], SPLIT, self.version))
            for upper, v in bounds
        )

        def rollout(vin: str | None, ctx: Mapping[str, Any]) -> Resolution | None:
            if not vin or not in_rollout(key, vin, threshold):
                return None
            result: Resolution = pick_variant(key, vin, picks)
            return result

        return rollout

    @property
    def fixed(self) -> Resolution | None:
        """The result for every VIN and context, when there is one (killed, disabled, broken)."""
        return self._fixed

    def evaluate(self, vin: str | None, context: Mapping[str, Any] = _EMPTY) -> Resolution:
        if self._fixed is not None:
            return self._fixed
        for rule in self._rules:
            hit = rule(vin, context)
            if hit is not None:
                return hit  # type: ignore[no-any-return]
        return self._default


def _rule_order(rule: Mapping[str, Any]) -> tuple[int, int]:
    return (-int(rule.get("priority", 0)), int(rule.get("id") or 0))


def not_found(flag_key: str, default: Any = None) -> Resolution:
    return Resolution(flag_key, default, None, ERROR, None, FLAG_NOT_FOUND)


class Snapshot:
    """All flags of one environment at one version, compiled."""

    __slots__ = ("data", "environment", "flags", "version")

    def __init__(self, flags: Iterable[Mapping[str, Any]], *, version: int = 0, environment: str | None = None) -> None:
        self.version = version
        self.environment = environment
        self.flags: dict[str, CompiledFlag] = {}
        for data in flags:
            if not data.get("archived"):
                self.flags[data["key"]] = CompiledFlag(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Snapshot:
        snapshot = cls(
            data.get("flags") or (), version=int(data.get("version") or 0), environment=data.get("environment")
        )
        return snapshot

    def evaluate(
        self, flag_key: str, vin: str | None, context: Mapping[str, Any] | None = None, default: Any = None
    ) -> Resolution:
        flag = self.flags.get(flag_key)
        if flag is None:
            return not_found(flag_key, default)
        return flag.evaluate(vin, context if context is not None else _EMPTY)

    def evaluate_all(
        self, vin: str | None, context: Mapping[str, Any] | None = None, flag_keys: Iterable[str] | None = None
    ) -> dict[str, Resolution]:
        ctx = context if context is not None else _EMPTY
        if flag_keys is None:
            return {key: flag.evaluate(vin, ctx) for key, flag in self.flags.items()}
        return {key: self.evaluate(key, vin, ctx) for key in flag_keys}


def evaluate(
    flag: Mapping[str, Any] | None, vin: str | None, context: Mapping[str, Any] | None = None, default: Any = None
) -> Resolution:
    """Evaluate one flag given as snapshot JSON (compiles it each call: for tests and tools)."""
    if flag is None or flag.get("archived"):
        return not_found(flag["key"] if flag else "", default)
    return CompiledFlag(flag).evaluate(vin, context if context is not None else _EMPTY)
