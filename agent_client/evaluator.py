"""The flag evaluator (SPEC §2 "Evaluation"), the only one in FleetFlag.

Input is the snapshot JSON the server publishes (``flags.snapshots`` builds it from the
ORM; vehicles receive it by sync), shaped as ``agent_client.types.SnapshotDict``::

    {"environment": "production", "version": 42,
     "flags": [{"key", "type", "default_value", "enabled", "version", "ttl_seconds",
                "safety_level", "archived"?, "rules": [{"id", "type", "priority", "enabled",
                "conditions", "value"?, "variant"?}, ...]}, ...]}

Order: archived/unknown -> ERROR FLAG_NOT_FOUND; an enabled kill switch -> KILL_SWITCH;
disabled -> DISABLED; enabled rules by priority (highest first, ties by id) -> the first
match, TARGETING_MATCH or SPLIT; otherwise DEFAULT. What a rule matches and what it then
serves is its kind's business (``agent_client.rules.RULE_KINDS``); this module only
orders the rules and applies the flag-level states.

A flag is compiled once per snapshot; results that do not depend on the VIN are built
ahead of time, so most evaluations allocate nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from agent_client.resolution import (
    DEFAULT,
    DISABLED,
    ERROR,
    FLAG_NOT_FOUND,
    KILL_SWITCH,
    PARSE_ERROR,
    SPLIT,
    STALE,
    TARGETING_MATCH,
    TYPE_MISMATCH,
    Resolution,
)
from agent_client.rules import KILL_SWITCH_RULE, RULE_KINDS, Matcher, Served, validate_rule
from agent_client.types import FlagDict, RuleDict, SnapshotDict

__all__ = [
    "DEFAULT",
    "DISABLED",
    "ERROR",
    "FLAG_NOT_FOUND",
    "KILL_SWITCH",
    "PARSE_ERROR",
    "SPLIT",
    "STALE",
    "TARGETING_MATCH",
    "TYPE_MISMATCH",
    "CompiledFlag",
    "Resolution",
    "Snapshot",
    "evaluate",
    "not_found",
]

_EMPTY: Mapping[str, Any] = {}


class CompiledFlag:
    """One flag, ready to evaluate. Built from the snapshot JSON of the flag."""

    __slots__ = (
        "_default",
        "_fixed",
        "_rules",
        "compile_error",
        "default_value",
        "key",
        "safety_level",
        "ttl_seconds",
        "type",
        "version",
    )

    def __init__(self, data: FlagDict) -> None:
        self.key: str = data["key"]
        self.type: str = data.get("type", "boolean")
        self.default_value: Any = data.get("default_value")
        self.version: int | None = data.get("version")
        self.ttl_seconds: int | None = data.get("ttl_seconds")
        self.safety_level: str | None = data.get("safety_level")
        self.compile_error: str | None = None
        self._rules: tuple[Matcher, ...] = ()
        rules = [r for r in data.get("rules") or () if r.get("enabled", True)]
        # The kill switch is not one more rule in the priority order: it overrides every
        # rule whatever its priority, and the flag's own enabled, so it is decided here
        # before anything else is read (and holds even when another rule cannot compile).
        kill = next((r for r in rules if r.get("type") == KILL_SWITCH_RULE), None)
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

    def _compile_rule(self, rule: RuleDict) -> Matcher:
        rule_type = rule["type"]
        kind = RULE_KINDS.get(rule_type)
        if kind is None or kind.compile is None:
            raise ValueError(f"unknown rule type {rule_type!r}")
        conditions = rule.get("conditions") or {}
        value = rule.get("value")
        variant = rule.get("variant") or "enabled"
        problems = validate_rule(
            flag_type=self.type, rule_type=rule_type, conditions=conditions, value=value, variant=variant
        )
        if problems:
            raise ValueError(f"rule {rule.get('id')}: {problems}")
        if value is None:
            value = True if self.type == "boolean" else self.default_value
        return kind.compile(conditions, Served(self.key, self.version, value, variant))

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
                return hit
        return self._default


def _rule_order(rule: RuleDict) -> tuple[int, int]:
    return (-int(rule.get("priority", 0)), int(rule.get("id") or 0))


def not_found(flag_key: str, default: Any = None) -> Resolution:
    return Resolution(flag_key, default, None, ERROR, None, FLAG_NOT_FOUND)


class Snapshot:
    """All flags of one environment at one version, compiled."""

    __slots__ = ("data", "environment", "flags", "version")

    def __init__(self, flags: Iterable[FlagDict], *, version: int = 0, environment: str | None = None) -> None:
        self.version = version
        self.environment = environment
        self.flags: dict[str, CompiledFlag] = {}
        for data in flags:
            if not data.get("archived"):
                self.flags[data["key"]] = CompiledFlag(data)

    @classmethod
    def from_dict(cls, data: SnapshotDict) -> Snapshot:
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
    flag: FlagDict | None, vin: str | None, context: Mapping[str, Any] | None = None, default: Any = None
) -> Resolution:
    """Evaluate one flag given as snapshot JSON (compiles it each call: for tests and tools)."""
    if flag is None or flag.get("archived"):
        return not_found(flag["key"] if flag else "", default)
    return CompiledFlag(flag).evaluate(vin, context if context is not None else _EMPTY)
