"""The rule language: one registry entry per rule type, for server and vehicle alike.

``RULE_KINDS`` maps each rule type to its ``RuleKind``: the label people see, the
validation of its conditions and the compiler of a valid rule. Adding a rule type is
adding one entry here; ``flags.models.RuleType`` mirrors the keys and labels for the
database, and ``tests/agent_client/test_rule_registry.py`` holds the two equal.

``validate_rule`` returns the problems as ``{field: [message, ...]}`` (empty when valid)
so that the server can refuse bad input naming the field. A kind's ``compile`` turns a
valid rule into a matcher ``(vin, context) -> Resolution | None`` with everything that can
be computed ahead of time already computed, because evaluation is the hot path.

Every evaluation of a valid rule has a small bounded cost, whatever its author wrote or
the caller sends (the caps are checked when the rule is written and again when a snapshot
is compiled, so a vehicle enforces them too):

- lists (``vins``, ``models``, ``regions``, ``values``) hold at most ``MAX_LIST`` entries
  and are matched through frozensets: one hash lookup, whatever their length;
- a rollout has at most ``MAX_VARIANTS`` variants;
- ``regex`` runs on RE2 with capped pattern, program and subject sizes
  (``agent_client.regex``);
- versions are at most ``agent_client.semver.MAX_VERSION_LENGTH`` characters and ranges
  at most ``MAX_RANGE_COMPARATORS`` comparators; a longer context value is not a version;
- a rule reads one attribute of the context with one lookup and never walks into a value
  (a list or an object never matches), so a deep or huge context costs nothing more.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any, cast

from agent_client.bucketing import ROLLOUT_SALT, VARIANT_SALT, bucket, percent_to_buckets
from agent_client.regex import compile_search, pattern_problem
from agent_client.resolution import SPLIT, TARGETING_MATCH, Resolution
from agent_client.semver import (
    MAX_VERSION_LENGTH,
    SemverError,
    VersionKey,
    parse_range,
    parse_version,
    try_parse_version,
)
from agent_client.types import (
    PercentageRolloutConditions,
    UserAttributeConditions,
    VehicleTargetConditions,
    VehicleWhitelistConditions,
)

FLAG_TYPES = ("boolean", "string", "number", "json")
LIST_OPERATORS = ("in", "not_in")
SCALAR_OPERATORS = ("eq", "neq", "gt", "gte", "lt", "lte", "semver_gte", "semver_lt", "regex")
OPERATORS = LIST_OPERATORS + SCALAR_OPERATORS
VIN_RE = re.compile(r"^[A-HJ-NPR-Z0-9]{17}$")
VARIANT_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_LIST = 10_000
MAX_VARIANTS = 100

# The kill switch is a registry entry like the others, but the evaluator applies it before
# every rule and before ``enabled`` (SPEC §2 "Evaluation", step 2): it names it by this.
KILL_SWITCH_RULE = "kill_switch"

Errors = dict[str, list[str]]
Matcher = Callable[[str | None, Mapping[str, Any]], Resolution | None]
Predicate = Callable[[str | None, Mapping[str, Any]], bool]
ConditionsValidator = Callable[[Mapping[str, Any], str], list[str]]


@dataclass(frozen=True, slots=True)
class Served:
    """What a rule of one flag serves when it matches: the value is already defaulted
    (true for a boolean flag, else the flag's default, when the rule gives none)."""

    flag_key: str
    version: int | None
    value: Any
    variant: str


Compiler = Callable[[Mapping[str, Any], Served], Matcher]


@dataclass(frozen=True, slots=True)
class RuleKind:
    """One rule type: everything the server and the evaluator need to know about it."""

    name: str
    label: str
    validate: ConditionsValidator
    # None: the rule is not tried by priority (the kill switch; see KILL_SWITCH_RULE).
    compile: Compiler | None
    # For a kind that serves no value of its own: the message that refuses one.
    value_refused: str | None = None


# -- values -----------------------------------------------------------------------


def value_type_error(flag_type: str, value: object) -> str | None:
    """Why ``value`` cannot be served by a flag of ``flag_type``, or None."""
    if flag_type == "boolean":
        return None if isinstance(value, bool) else f"must be true or false for a boolean flag, not {value!r}"
    if flag_type == "string":
        return None if isinstance(value, str) else f"must be a string for a string flag, not {value!r}"
    if flag_type == "number":
        return None if _is_number(value) else f"must be a finite number for a number flag, not {value!r}"
    if flag_type == "json":
        return None if _is_json(value) else "must be a JSON value"
    return f"unknown flag type {flag_type!r} (one of {', '.join(FLAG_TYPES)})"


def _is_json(value: object) -> bool:
    if value is None or isinstance(value, (str, bool, int)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_is_json(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
    return False


def _is_number(value: object) -> bool:
    """A JSON number a double can hold. Never raises: ``math.isfinite`` on an int beyond
    the float range raises OverflowError, and JSON parsers return such ints."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -sys.float_info.max <= value <= sys.float_info.max  # exact: no conversion to float
    return isinstance(value, float) and math.isfinite(value)


def _percent_error(value: object, what: str) -> str | None:
    if not _is_number(value):
        return f"{what} must be a number from 0 to 100"
    assert isinstance(value, (int, float))
    if not 0 <= value <= 100:
        return f"{what} must be from 0 to 100, not {value}"
    if abs(value * 100 - round(value * 100)) > 1e-6:
        return f"{what} may have at most two decimals, not {value}"
    return None


# -- validation -------------------------------------------------------------------


def validate_rule(
    *, flag_type: str, rule_type: str, conditions: object, value: object = None, variant: object = "enabled"
) -> Errors:
    errors: Errors = {}

    def add(field: str, message: str) -> None:
        errors.setdefault(field, []).append(message)

    kind = RULE_KINDS.get(rule_type)
    if kind is None:
        add("type", f"unknown rule type {rule_type!r} (one of {', '.join(RULE_KINDS)})")
        return errors
    if not isinstance(conditions, dict):
        add("conditions", "must be a JSON object")
        return errors
    for message in kind.validate(conditions, flag_type):
        add("conditions", message)
    if value is not None:
        problem = value_type_error(flag_type, value)
        if problem:
            add("value", problem)
        if kind.value_refused:
            add("value", kind.value_refused)
    if not isinstance(variant, str) or not VARIANT_KEY_RE.match(variant):
        add("variant", "must be a short key of letters, digits, '_', '.' or '-'")
    return errors


def _unknown_keys(conditions: Mapping[str, Any], allowed: tuple[str, ...]) -> list[str]:
    extra = sorted(set(conditions) - set(allowed))
    return [f"unknown field(s) {', '.join(extra)} (allowed: {', '.join(allowed)})"] if extra else []


def _too_many(name: str, items: list[Any], cap: int) -> list[str]:
    return [f"{name} may hold at most {cap} entries, not {len(items)}"] if len(items) > cap else []


def _string_list(conditions: Mapping[str, Any], name: str, *, required: bool) -> list[str]:
    if name not in conditions:
        return [f"{name} is required"] if required else []
    items = conditions[name]
    if not isinstance(items, list) or not items:
        return [f"{name} must be a non-empty list"]
    if too_many := _too_many(name, items, MAX_LIST):
        return too_many
    bad = [i for i, item in enumerate(items) if not isinstance(item, str) or not item]
    return [f"{name}[{bad[0]}] must be a non-empty string"] if bad else []


def _validate_kill_switch(conditions: Mapping[str, Any], flag_type: str) -> list[str]:
    problems = _unknown_keys(conditions, ("force_disabled", "reason"))
    if conditions.get("force_disabled") is not True:
        problems.append("force_disabled must be true")
    reason = conditions.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        problems.append("reason is required: say why the flag is killed")
    return problems


def _validate_whitelist(conditions: Mapping[str, Any], flag_type: str) -> list[str]:
    problems = _unknown_keys(conditions, ("vins",))
    problems += _string_list(conditions, "vins", required=True)
    if not problems:
        for i, vin in enumerate(conditions["vins"]):
            if not VIN_RE.fullmatch(vin):
                problems.append(f"vins[{i}] {vin!r} is not a VIN (17 characters of A-H, J-N, P, R-Z, 0-9)")
                break
    return problems


def _validate_target(conditions: Mapping[str, Any], flag_type: str) -> list[str]:
    fields = ("models", "sw_version", "regions")
    problems = _unknown_keys(conditions, fields)
    if not any(name in conditions for name in fields):
        problems.append("give at least one of models, sw_version, regions")
    problems += _string_list(conditions, "models", required=False)
    problems += _string_list(conditions, "regions", required=False)
    if "sw_version" in conditions:
        try:
            parse_range(conditions["sw_version"])
        except SemverError as exc:
            problems.append(f"sw_version: {exc}")
    return problems


def _scalar(value: object) -> bool:
    return isinstance(value, (str, bool)) or _is_number(value)


def _validate_attribute(conditions: Mapping[str, Any], flag_type: str) -> list[str]:
    problems = _unknown_keys(conditions, ("attribute", "operator", "values", "value"))
    attribute = conditions.get("attribute")
    if not isinstance(attribute, str) or not attribute:
        problems.append("attribute is required (the context attribute to test)")
    operator = conditions.get("operator")
    if operator not in OPERATORS:
        problems.append(f"operator must be one of {', '.join(OPERATORS)}, not {operator!r}")
        return problems
    if operator in LIST_OPERATORS:
        values = conditions.get("values")
        if not isinstance(values, list) or not values:
            return problems + [f"values must be a non-empty list for operator {operator}"]
        if too_many := _too_many("values", values, MAX_LIST):
            return problems + too_many
        if not all(_scalar(v) for v in values):
            problems.append("values must be strings, numbers or booleans")
        return problems
    try:
        operand = scalar_operand(conditions)
    except ValueError as exc:
        return problems + [str(exc)]
    if operator in ("gt", "gte", "lt", "lte") and not _is_number(operand):
        problems.append(f"value must be a number for operator {operator}")
    elif operator in ("semver_gte", "semver_lt"):
        try:
            parse_version(operand)  # type: ignore[arg-type]
        except SemverError as exc:
            problems.append(f"value: {exc}")
    elif operator == "regex":
        problem = pattern_problem(operand)
        if problem:
            problems.append(f"value {problem}")
    elif not _scalar(operand):
        problems.append("value must be a string, number or boolean")
    return problems


def scalar_operand(conditions: Mapping[str, Any]) -> object:
    """The operand of a single-valued operator: ``value``, or ``values`` holding exactly one."""
    if "value" in conditions:
        return conditions["value"]
    values = conditions.get("values")
    if isinstance(values, list) and len(values) == 1:
        return values[0]
    raise ValueError(f"operator {conditions.get('operator')} takes one operand: give value (or values with one item)")


def _validate_rollout(conditions: Mapping[str, Any], flag_type: str) -> list[str]:
    problems = _unknown_keys(conditions, ("rollout_percentage", "sticky", "variants"))
    problem = _percent_error(conditions.get("rollout_percentage"), "rollout_percentage")
    if problem:
        problems.append(problem)
    if conditions.get("sticky", True) is not True:
        # A vehicle must never flip between evaluations: buckets are always sticky by VIN.
        problems.append("sticky must be true: rollouts are always sticky by VIN")
    if "variants" in conditions:
        variants = conditions["variants"]
        if not isinstance(variants, list) or not variants:
            return problems + ["variants must be a non-empty list"]
        if too_many := _too_many("variants", variants, MAX_VARIANTS):
            return problems + too_many
        keys: set[str] = set()
        total = 0
        for i, variant in enumerate(variants):
            if not isinstance(variant, dict):
                problems.append(f"variants[{i}] must be an object with key, weight and value")
                continue
            extra = sorted(set(variant) - {"key", "weight", "value"})
            if extra:
                problems.append(f"variants[{i}] has unknown field(s) {', '.join(extra)}")
            key = variant.get("key")
            if not isinstance(key, str) or not VARIANT_KEY_RE.match(key):
                problems.append(f"variants[{i}].key must be a short key of letters, digits, '_', '.' or '-'")
            elif key in keys:
                problems.append(f"variants[{i}].key {key!r} is used twice")
            else:
                keys.add(key)
            weight_problem = _percent_error(variant.get("weight"), f"variants[{i}].weight")
            if weight_problem:
                problems.append(weight_problem)
            else:
                total += percent_to_buckets(variant["weight"])
            if "value" in variant and variant["value"] is not None:
                value_problem = value_type_error(flag_type, variant["value"])
                if value_problem:
                    problems.append(f"variants[{i}].value {value_problem}")
        if not problems and total != 10_000:
            problems.append(f"variant weights must sum to 100, not {total / 100:g}")
    return problems


# -- compilation ------------------------------------------------------------------
# Each compiler receives conditions that validate_rule accepted (the evaluator validates
# before it compiles), hence the casts to their TypedDict.

_cached_version_key = lru_cache(maxsize=4096)(try_parse_version)


def _version_key(value: object) -> VersionKey | None:
    # Only strings reach the cache: a context value may be any JSON, and a list or an
    # object is unhashable (it would raise inside lru_cache instead of not matching).
    # Only short ones: a longer string is no version, and the cache must not keep it.
    if isinstance(value, str) and len(value) <= MAX_VERSION_LENGTH:
        return _cached_version_key(value)
    return None


# What a value that is not a JSON scalar (null, a list, an object, or absent) normalises
# to: it equals nothing and belongs to no set, so such a value never matches any operator.
_UNCOMPARABLE = object()


def _norm(value: object) -> object:
    """A hashable key under which JSON scalars compare as JSON does (true != 1)."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return ("number", value)
    return _UNCOMPARABLE


def _compile_targeting(
    predicate: Callable[[Mapping[str, Any]], Predicate], conditions: Mapping[str, Any], served: Served
) -> Matcher:
    """The compiler of a kind whose match serves the rule's value as TARGETING_MATCH (the
    registry binds each kind's predicate to it)."""
    hit = Resolution(served.flag_key, served.value, served.variant, TARGETING_MATCH, served.version)
    test = predicate(conditions)
    return lambda vin, ctx: hit if test(vin, ctx) else None


def _whitelist_predicate(conditions: Mapping[str, Any]) -> Predicate:
    vins = frozenset(cast(VehicleWhitelistConditions, conditions)["vins"])
    return lambda vin, ctx: vin in vins


def _target_predicate(conditions: Mapping[str, Any]) -> Predicate:
    target = cast(VehicleTargetConditions, conditions)
    checks: list[Callable[[Mapping[str, Any]], bool]] = []
    if "models" in target:
        models = frozenset(target["models"])
        # isinstance first: a list or an object in the context is unhashable.
        checks.append(lambda ctx: isinstance(m := ctx.get("model"), str) and m in models)
    if "regions" in target:
        regions = frozenset(target["regions"])
        checks.append(lambda ctx: isinstance(r := ctx.get("region"), str) and r in regions)
    if "sw_version" in target:
        in_range = parse_range(target["sw_version"])

        def version_ok(ctx: Mapping[str, Any]) -> bool:
            key = _version_key(ctx.get("sw_version"))
            return key is not None and in_range(key)

        checks.append(version_ok)
    frozen = tuple(checks)
    if len(frozen) == 1:
        only = frozen[0]
        return lambda vin, ctx: only(ctx)
    return lambda vin, ctx: all(check(ctx) for check in frozen)


def _attribute_predicate(conditions: Mapping[str, Any]) -> Predicate:
    rule = cast(UserAttributeConditions, conditions)
    attribute = rule["attribute"]
    operator = rule["operator"]
    # An absent attribute, null, a list or an object never matches, not even "not in" or
    # "neq": absent or unreadable data must not target (and must not raise on the hot path).
    if operator in LIST_OPERATORS:
        members = frozenset(_norm(v) for v in rule["values"])
        if operator == "in":
            return lambda vin, ctx: _norm(ctx.get(attribute)) in members
        return lambda vin, ctx: (k := _norm(ctx.get(attribute))) is not _UNCOMPARABLE and k not in members
    operand: Any = scalar_operand(conditions)
    if operator in ("eq", "neq"):
        key = _norm(operand)
        if operator == "eq":
            return lambda vin, ctx: _norm(ctx.get(attribute)) == key
        return lambda vin, ctx: (k := _norm(ctx.get(attribute))) is not _UNCOMPARABLE and k != key
    if operator in ("gt", "gte", "lt", "lte"):
        compare: Callable[[Any, Any], bool] = {
            "gt": lambda a, b: a > b,
            "gte": lambda a, b: a >= b,
            "lt": lambda a, b: a < b,
            "lte": lambda a, b: a <= b,
        }[operator]
        return lambda vin, ctx: _is_number(v := ctx.get(attribute)) and compare(v, operand)
    if operator in ("semver_gte", "semver_lt"):
        bound: VersionKey = parse_version(operand)
        if operator == "semver_gte":
            return lambda vin, ctx: (k := _version_key(ctx.get(attribute))) is not None and k >= bound
        return lambda vin, ctx: (k := _version_key(ctx.get(attribute))) is not None and k < bound
    if operator == "regex":
        matches = compile_search(operand)
        return lambda vin, ctx: isinstance(v := ctx.get(attribute), str) and matches(v)
    raise ValueError(f"unknown operator {operator!r}")


def _compile_rollout(conditions: Mapping[str, Any], served: Served) -> Matcher:
    """SPLIT for a VIN whose bucket is in the rollout; with variants, the variant's value."""
    rollout = cast(PercentageRolloutConditions, conditions)
    key = served.flag_key
    threshold = percent_to_buckets(rollout["rollout_percentage"])
    variants = rollout.get("variants") or []
    if not variants:
        hit = Resolution(key, served.value, served.variant, SPLIT, served.version)
        return lambda vin, ctx: hit if vin and in_rollout(key, vin, threshold) else None
    cumulative = 0
    bounds: list[tuple[int, Resolution]] = []
    for variant in variants:
        cumulative += percent_to_buckets(variant["weight"])
        value = variant.get("value")
        picked = Resolution(key, served.value if value is None else value, variant["key"], SPLIT, served.version)
        bounds.append((cumulative, picked))
    picks = tuple(bounds)

    def split(vin: str | None, ctx: Mapping[str, Any]) -> Resolution | None:
        if not vin or not in_rollout(key, vin, threshold):
            return None
        return pick_variant(key, vin, picks)

    return split


def pick_variant(flag_key: str, vin: str, bounds: tuple[tuple[int, Resolution], ...]) -> Resolution:
    """The variant whose cumulative upper bound (in buckets) first exceeds the VIN's point.

    The last variant takes every point past the others' bounds (its own bound is the whole
    range when the weights sum to 100, as validation requires)."""
    point = bucket(flag_key, VARIANT_SALT, vin)
    for upper, picked in bounds[:-1]:
        if point < upper:
            return picked
    return bounds[-1][1]


def in_rollout(flag_key: str, vin: str, threshold: int) -> bool:
    return bucket(flag_key, ROLLOUT_SALT, vin) < threshold


# -- the registry -------------------------------------------------------------------

RULE_KINDS: dict[str, RuleKind] = {
    kind.name: kind
    for kind in (
        RuleKind(
            KILL_SWITCH_RULE,
            "Kill switch",
            _validate_kill_switch,
            compile=None,
            value_refused="a kill switch serves the flag's default value; it takes no value",
        ),
        RuleKind(
            "vehicle_whitelist",
            "Vehicle whitelist",
            _validate_whitelist,
            partial(_compile_targeting, _whitelist_predicate),
        ),
        RuleKind("vehicle_target", "Vehicle target", _validate_target, partial(_compile_targeting, _target_predicate)),
        RuleKind(
            "user_attribute",
            "Context attribute",
            _validate_attribute,
            partial(_compile_targeting, _attribute_predicate),
        ),
        RuleKind("percentage_rollout", "Percentage rollout", _validate_rollout, _compile_rollout),
    )
}
RULE_TYPES = tuple(RULE_KINDS)
