"""One registry entry per rule type: the database's rule types are the registry's.

``agent_client.rules.RULE_KINDS`` is where a rule type is defined (label, validation,
compiler); ``flags.models.RuleType`` is its copy for the database (choices and a check
constraint), which cannot import from a registry built at runtime without a migration
for every change. This test is what keeps the two the same.
"""

from __future__ import annotations

from agent_client.rules import KILL_SWITCH_RULE, RULE_KINDS, RULE_TYPES
from flags.models import RuleType


def test_rule_registry__django_rule_types__same_values_in_same_order() -> None:
    assert list(RuleType.values) == list(RULE_KINDS)


def test_rule_registry__django_rule_type_labels__same_as_registry_labels() -> None:
    assert dict(RuleType.choices) == {name: kind.label for name, kind in RULE_KINDS.items()}


def test_rule_registry__entries__keyed_by_their_own_name() -> None:
    assert all(name == kind.name for name, kind in RULE_KINDS.items())
    assert RULE_TYPES == tuple(RULE_KINDS)


def test_rule_registry__kill_switch__only_kind_outside_the_priority_order() -> None:
    # The evaluator applies the kill switch before every rule; every other kind compiles
    assert [name for name, kind in RULE_KINDS.items() if kind.compile is None] == [KILL_SWITCH_RULE]
    assert RULE_KINDS[KILL_SWITCH_RULE].value_refused is not None
