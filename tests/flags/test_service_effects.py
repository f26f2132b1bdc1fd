"""What each flag and rule operation records: the audit entry's object and before/after, the
default priority of a new rule, and the rationale every ASIL-D entry point asks for.
Written against mutants of flags.services that survived."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError

from audit.models import AuditEntry
from core.errors import NotFound
from flags import services, snapshots
from flags.models import ChangeRequest, Flag, Rule
from tests.factories import FlagFactory, RuleFactory, actor
from tests.governance.conftest import state

pytestmark = pytest.mark.django_db

WHITELIST = {"type": "vehicle_whitelist", "conditions": {"vins": ["KMHXX00XXXX000001"]}}


def last_entry() -> tuple[Any, ...]:
    found = AuditEntry.objects.order_by("-seq").first()
    assert found is not None
    return (found.action, found.flag_id, found.object_type, found.object_id, found.before, found.after)


def test_flag_archive__non_critical__audit_entry_with_the_flag_before_and_after() -> None:
    # Given a flag
    flag = FlagFactory(key="ui.theme")
    before = services.flag_fields(flag)
    # When it is archived
    services.flag_archive(actor=actor("WRITE"), flag=flag)
    # Then the entry names the flag and shows it before and after (archived, next version)
    flag.refresh_from_db()
    assert last_entry() == ("ARCHIVE_FLAG", flag.pk, "flag", str(flag.pk), before,
                            {**before, "archived": True, "version": 1})
    assert flag.archived_at is not None


def test_rule_delete__non_critical__audit_entry_with_the_rule_before() -> None:
    flag = FlagFactory(key="ui.theme")
    rule = RuleFactory(flag=flag, priority=5)
    before = snapshots.rule_to_dict(rule)
    services.rule_delete(actor=actor("WRITE"), flag=flag, rule_id=rule.pk)
    assert last_entry() == ("DELETE_RULE", flag.pk, "rule", str(rule.pk), before, None)


def test_rule_delete__engaged_kill_switch_rule__audited_as_lifting_the_kill_switch() -> None:
    # Given a killed flag
    flag = FlagFactory(key="ui.theme")
    rule = services.kill_switch_engage(actor=actor("WRITE"), flag=flag, reason="thermal event").rule
    assert rule is not None
    before = snapshots.rule_to_dict(rule)
    # When its kill switch rule is deleted
    services.rule_delete(actor=actor("WRITE", "writer-2"), flag=flag, rule_id=rule.pk)
    # Then that is a lift of the kill switch, and the audit says so
    assert last_entry() == ("LIFT_KILL_SWITCH", flag.pk, "rule", str(rule.pk), before, None)


@pytest.mark.parametrize(("existing", "expected"), [([], 10), ([5, 40], 50)])
def test_rule_create__no_priority__placed_above_every_rule(existing: list[int], expected: int) -> None:
    # Given a flag with rules at some priorities (and another flag with a higher one)
    flag = FlagFactory(key="ui.theme")
    for priority in existing:
        RuleFactory(flag=flag, priority=priority)
    RuleFactory(flag=FlagFactory(key="ui.other"), priority=900)
    # When a rule is created without a priority
    outcome = services.rule_create(actor=actor("WRITE"), flag=flag, **WHITELIST)
    # Then it goes 10 above this flag's highest (10 on a flag without rules): evaluated first
    assert outcome.rule is not None and outcome.rule.priority == expected


def _rule_id(flag: Flag) -> int:
    return Rule.objects.get(flag=flag, type="vehicle_whitelist").pk


WITHOUT_RATIONALE: dict[str, Callable[[Any, Flag], Any]] = {
    "archive": lambda who, f: services.flag_archive(actor=who, flag=f),
    "rule create": lambda who, f: services.rule_create(actor=who, flag=f, type="percentage_rollout",
                                                       conditions={"rollout_percentage": 10}),
    "rule update": lambda who, f: services.rule_update(actor=who, flag=f, rule_id=_rule_id(f), priority=6),
    "rule delete": lambda who, f: services.rule_delete(actor=who, flag=f, rule_id=_rule_id(f)),
    "update": lambda who, f: services.flag_update(actor=who, flag=f, changes={"name": "Renamed"}),
    "grouped change": lambda who, f: services.flag_change(actor=who, flag=f, steps=[
        services.update_step({"name": "Renamed"}), services.rule_delete_step(_rule_id(f))]),
}


@pytest.mark.parametrize("operation", list(WITHOUT_RATIONALE))
def test_asil_d__operation_without_rationale__refused_naming_rationale_and_nothing_changed(operation: str) -> None:
    # Given an ASIL-D flag with a rule
    flag = FlagFactory(key="brake.blend", safety_level="ASIL_D", enabled=False)
    RuleFactory(flag=flag, **WHITELIST, priority=5)
    before = state(flag)
    # When the operation is asked for without a rationale
    with pytest.raises(ValidationError) as refused:
        WITHOUT_RATIONALE[operation](actor("WRITE"), flag)
    # Then it is refused for the rationale; no request, nothing changed
    assert list(refused.value.message_dict) == ["rationale"]
    assert not ChangeRequest.objects.exists()
    assert state(flag) == before


def test_flag_change__steps_refused__message_counts_them() -> None:
    flag = FlagFactory(key="ui.theme")
    with pytest.raises(services.StepsRefused) as refused:
        services.flag_change(actor=actor("WRITE"), flag=flag, steps=[
            services.rule_update_step(424242, priority=1), services.rule_delete_step(424243)])
    assert (str(refused.value), sorted(refused.value.errors)) == ("2 step(s) refused", [0, 1])


def test_rule_update__engaged_kill_switch_disabled__audited_as_lifting_the_kill_switch() -> None:
    flag = FlagFactory(key="ui.theme")
    rule = services.kill_switch_engage(actor=actor("WRITE"), flag=flag, reason="thermal event").rule
    assert rule is not None
    before = snapshots.rule_to_dict(rule)
    services.rule_update(actor=actor("WRITE", "writer-2"), flag=flag, rule_id=rule.pk, enabled=False)
    assert last_entry() == ("LIFT_KILL_SWITCH", flag.pk, "rule", str(rule.pk), before,
                            {**before, "enabled": False})


def test_rule_create__without_type__refused_naming_type_and_nothing_saved() -> None:
    flag = FlagFactory(key="ui.theme")
    with pytest.raises(ValidationError) as refused:
        services.rule_create(actor=actor("WRITE"), flag=flag, conditions={"vins": ["KMHXX00XXXX000001"]})
    assert refused.value.message_dict == {"type": ["the rule type is required"]}
    assert not Rule.objects.exists()


def test_flag_change__kill_switch_among_grouped_steps__refused_and_nothing_applied() -> None:
    # Given a flag, When a grouped change carries a kill switch among its steps
    flag = FlagFactory(key="ui.theme")
    before = state(flag)
    with pytest.raises(ValidationError) as refused:
        services.flag_change(actor=actor("WRITE"), flag=flag, steps=[
            services.Step("kill_switch", {"reason": "thermal event"}), services.update_step({"name": "Renamed"})])
    # Then it is refused (the kill switch has its own path) and nothing is applied
    assert refused.value.message_dict == {"__all__": ["kill_switch cannot be part of a grouped change"]}
    assert state(flag) == before


RULE_OF_ANOTHER_FLAG: dict[str, Callable[[Any, Flag, int], Any]] = {
    "update": lambda who, f, rule_id: services.rule_update(actor=who, flag=f, rule_id=rule_id, enabled=False),
    "delete": lambda who, f, rule_id: services.rule_delete(actor=who, flag=f, rule_id=rule_id),
}


@pytest.mark.parametrize("operation", list(RULE_OF_ANOTHER_FLAG))
def test_rule_change__rule_of_another_flag__not_found_and_nothing_changed(operation: str) -> None:
    # Given an ASIL-D flag's rule, and a non-critical flag the writer may change at once
    brakes = FlagFactory(key="brake.blend", safety_level="ASIL_D")
    rule = RuleFactory(flag=brakes, **WHITELIST, priority=5)
    theme = FlagFactory(key="ui.theme")
    before = state(brakes)
    # When the writer changes the ASIL-D flag's rule through the other flag
    with pytest.raises(NotFound) as refused:
        RULE_OF_ANOTHER_FLAG[operation](actor("WRITE"), theme, rule.pk)
    # Then there is no such rule there: the ASIL-D rule is untouched, without approval or not
    assert str(refused.value) == f"flag ui.theme has no rule {rule.pk}"
    assert state(brakes) == before


def test_rule_update__engaged_kill_switch_reason_changed__audited_as_an_update() -> None:
    flag = FlagFactory(key="ui.theme")
    rule = services.kill_switch_engage(actor=actor("WRITE"), flag=flag, reason="thermal event").rule
    assert rule is not None
    conditions = {"force_disabled": True, "reason": "thermal event, see 24V-001"}
    services.rule_update(actor=actor("WRITE", "writer-2"), flag=flag, rule_id=rule.pk, conditions=conditions)
    assert last_entry()[:4] == ("UPDATE_RULE", flag.pk, "rule", str(rule.pk))


def test_rule_create__same_type_and_priority__refused_naming_both() -> None:
    flag = FlagFactory(key="ui.theme")
    RuleFactory(flag=flag, **WHITELIST, priority=5)
    with pytest.raises(ValidationError) as refused:
        services.rule_create(actor=actor("WRITE"), flag=flag, priority=5, **WHITELIST)
    assert refused.value.message_dict == {"priority": ["another vehicle_whitelist rule of this flag has priority 5"]}
    assert Rule.objects.count() == 1


def test_rule_create__same_priority_other_type_or_other_flag__allowed() -> None:
    # Given a whitelist rule at priority 5, and another flag with the same rule
    flag = FlagFactory(key="ui.theme")
    RuleFactory(flag=flag, **WHITELIST, priority=5)
    RuleFactory(flag=FlagFactory(key="ui.other"), **WHITELIST, priority=7)
    # When a rule of another type takes priority 5, and a whitelist rule priority 7
    services.rule_create(actor=actor("WRITE"), flag=flag, priority=5, type="percentage_rollout",
                         conditions={"rollout_percentage": 10})
    services.rule_create(actor=actor("WRITE"), flag=flag, priority=7, **WHITELIST)
    # Then both are saved: uniqueness is per flag, type and priority
    assert sorted(Rule.objects.filter(flag=flag).values_list("type", "priority")) == [
        ("percentage_rollout", 5), ("vehicle_whitelist", 5), ("vehicle_whitelist", 7)]


def test_rule_change__unknown_field_or_nothing__refused_with_message() -> None:
    flag = FlagFactory(key="ui.theme")
    rule = RuleFactory(flag=flag, priority=5)
    with pytest.raises(ValidationError) as unknown:
        services.rule_create(actor=actor("WRITE"), flag=flag, colour="red", **WHITELIST)
    with pytest.raises(ValidationError) as empty:
        services.rule_update(actor=actor("WRITE"), flag=flag, rule_id=rule.pk)
    with pytest.raises(ValidationError) as no_steps:
        services.flag_change(actor=actor("WRITE"), flag=flag, steps=[])
    assert unknown.value.message_dict == {"colour": ["not a field of a rule"]}
    assert empty.value.message_dict == no_steps.value.message_dict == {"__all__": ["nothing to change"]}
    assert list(Rule.objects.values_list("pk", flat=True)) == [rule.pk]


def test_flag_update__owner_team_by_id_or_blank__resolved() -> None:
    # Given a flag and a team
    chassis = Group.objects.create(name="chassis")
    flag = FlagFactory(key="ui.theme")
    admin = actor("ADMIN")
    # When an ADMIN gives it to the team by id, then takes it away with a blank
    services.flag_update(actor=admin, flag=flag, changes={"owner_team": chassis.pk})
    given = Flag.objects.get(pk=flag.pk).owner_team_id
    services.flag_update(actor=admin, flag=flag, changes={"owner_team": ""})
    # Then the team is found by id, and a blank means no team
    assert (given, Flag.objects.get(pk=flag.pk).owner_team_id) == (chassis.pk, None)


def test_flag_update__unknown_owner_team__refused_naming_owner_team() -> None:
    flag = FlagFactory(key="ui.theme")
    with pytest.raises(ValidationError) as refused:
        services.flag_update(actor=actor("ADMIN"), flag=flag, changes={"owner_team": "nobody"})
    assert refused.value.message_dict == {"owner_team": ["no team 'nobody'"]}
    assert Flag.objects.get(pk=flag.pk).owner_team_id is None


def test_flag_state__rules__highest_priority_first_then_by_id() -> None:
    # Given rules at priorities 5, 40 and 40 again (another type)
    flag = FlagFactory(key="ui.theme")
    low = RuleFactory(flag=flag, priority=5)
    high = RuleFactory(flag=flag, priority=40)
    tie = RuleFactory(flag=flag, priority=40, type="percentage_rollout", conditions={"rollout_percentage": 5})
    # When the state change requests show is taken, Then rules come in evaluation order
    assert [r["id"] for r in services.flag_state(flag)["rules"]] == [high.pk, tie.pk, low.pk]


@pytest.mark.parametrize(("changes", "errors"), [
    ({"key": "ui.other", "name": "X"}, {"key": ["key cannot change after the flag is created"]}),
    ({"type": "string"}, {"type": ["type cannot change after the flag is created"]}),
    ({"colour": "red"}, {"colour": ["not a field of a flag that can be changed"]}),
    ({}, {"__all__": ["nothing to change"]}),
])
def test_flag_update__fixed_unknown_or_no_field__refused_with_message_and_nothing_changed(
    changes: dict[str, Any], errors: dict[str, list[str]]
) -> None:
    flag = FlagFactory(key="ui.theme")
    before = state(flag)
    with pytest.raises(ValidationError) as refused:
        services.flag_update(actor=actor("WRITE"), flag=flag, changes=changes)
    assert refused.value.message_dict == errors
    assert state(flag) == before


def test_flag_update__asil_d_owner_team_as_group__request_stores_the_team_name() -> None:
    # Given an ASIL-D flag and a team its ADMIN hands it to (as a Group object)
    chassis = Group.objects.create(name="chassis")
    flag = FlagFactory(key="brake.blend", safety_level="ASIL_D")
    # When the change is requested
    outcome = services.flag_update(actor=actor("ADMIN"), flag=flag, changes={"owner_team": chassis},
                                   rationale="HARA-2026-017")
    # Then the stored request names the team (JSON), and approval would apply exactly that
    assert outcome.change_request is not None
    assert outcome.change_request.payload == {"changes": {"owner_team": "chassis"}}
    assert outcome.change_request.after["owner_team"] == "chassis"


def test_flag_fields__flag__every_field_by_its_name() -> None:
    # Given a flag of a team, When its fields are taken for the audit and change requests
    flag = FlagFactory(key="ui.theme", name="Theme", description="Dark or light", type="string",
                       default_value="light", enabled=False, safety_level="ASIL_B", environment="staging",
                       ttl_seconds=3600, owner_team=Group.objects.create(name="cockpit"))
    # Then each is named as the API and the audit name it
    assert services.flag_fields(flag) == {
        "key": "ui.theme", "name": "Theme", "description": "Dark or light", "type": "string",
        "default_value": "light", "enabled": False, "safety_level": "ASIL_B", "environment": "staging",
        "ttl_seconds": 3600, "owner_team": "cockpit", "version": 1, "archived": False}
