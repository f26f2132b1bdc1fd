"""The snapshot's shape: the contract between the server's mapper and the evaluator.

``flags.snapshots`` writes these dictionaries from the ORM (``rule_to_dict``,
``flag_to_dict``, ``build``), the server publishes them as JSON, a vehicle stores that
JSON and loads it again, and ``agent_client.evaluator`` reads them.

They say what a current server writes. The evaluator still reads them defensively: a
vehicle may hold a snapshot written by a newer server (a rule type it does not know) or
a damaged one, and such a flag evaluates to an ERROR, never to an exception. That is also
why ``RuleDict.type`` is a plain ``str`` (``agent_client.rules.RULE_KINDS`` holds the
known ones) and why ``conditions`` are checked again at compile time, whatever the type
says.

Conditions per rule type are spelled out below (``agent_client.rules`` validates them);
``RuleDict.conditions`` is their union, so code that reads a rule narrows by ``type``.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypeAlias, TypedDict

# JSON as ``json.loads`` returns it.
JSONScalar: TypeAlias = str | int | float | bool
JSONValue: TypeAlias = JSONScalar | list["JSONValue"] | dict[str, "JSONValue"] | None


# -- conditions, one shape per rule type ---------------------------------------------------


class KillSwitchConditions(TypedDict):
    force_disabled: Literal[True]
    reason: str


class VehicleWhitelistConditions(TypedDict):
    vins: list[str]


class VehicleTargetConditions(TypedDict, total=False):
    """At least one of the three is given; every given one must match."""

    models: list[str]
    sw_version: str  # a range: ">= 2.5.0, < 3"
    regions: list[str]


class UserAttributeConditions(TypedDict):
    """``values`` for ``in`` / ``not_in``; ``value`` (or ``values`` of one) for the others."""

    attribute: str
    operator: Literal["in", "not_in", "eq", "neq", "gt", "gte", "lt", "lte", "semver_gte", "semver_lt", "regex"]
    value: NotRequired[JSONScalar]
    values: NotRequired[list[JSONScalar]]


class VariantDict(TypedDict):
    key: str
    weight: float  # percent, at most two decimals; the variants' weights sum to 100
    value: NotRequired[JSONValue]  # absent or null: the rule's value


class PercentageRolloutConditions(TypedDict):
    rollout_percentage: float  # at most two decimals
    sticky: NotRequired[Literal[True]]
    variants: NotRequired[list[VariantDict]]


Conditions: TypeAlias = (
    KillSwitchConditions
    | VehicleWhitelistConditions
    | VehicleTargetConditions
    | UserAttributeConditions
    | PercentageRolloutConditions
)


# -- rules, flags, the snapshot --------------------------------------------------------------


class RuleDict(TypedDict):
    id: int | None
    type: str  # a key of agent_client.rules.RULE_KINDS, as far as this evaluator knows
    priority: int  # higher first; ties by id ascending
    enabled: bool
    conditions: Conditions
    variant: NotRequired[str]  # default "enabled"
    value: NotRequired[JSONValue]  # absent: true for a boolean flag, else the flag's default


class FlagDict(TypedDict):
    key: str
    type: str  # boolean, string, number or json (agent_client.rules.FLAG_TYPES)
    default_value: JSONValue
    enabled: bool
    safety_level: str
    environment: str
    version: int
    ttl_seconds: int | None
    rules: list[RuleDict]
    archived: NotRequired[Literal[True]]  # present only on an archived flag


class SnapshotDict(TypedDict):
    format: int
    environment: str
    version: int
    generated_at: str  # ISO 8601; not part of the ETag
    flags: list[FlagDict]
    kid: NotRequired[str]  # the signing key's id and the signature (agent_client.signing): present
    sig: NotRequired[str]  # on every snapshot the server serves, absent on one just built
