"""The kill switch through the services: per flag, again after a lift, refusals with their
codes and nothing changed. Written against mutants of flags.services that survived."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from audit.models import AuditEntry
from core.errors import Conflict, NotFound, PermissionDenied
from flags import services, snapshots
from flags.models import Flag, Rule
from tests.factories import FlagFactory, actor
from tests.governance.conftest import audit_trail, state

pytestmark = pytest.mark.django_db


def killed(flag: Flag) -> list[tuple[str, bool, Any]]:
    return list(Rule.objects.filter(flag=flag, type="kill_switch").values_list("type", "enabled", "conditions"))


def test_kill_switch_engage__another_flag_already_killed__this_flag_killed_too() -> None:
    # Given one flag whose kill switch is engaged
    writer = actor("WRITE")
    first, second = FlagFactory(key="seat.massage"), FlagFactory(key="seat.heating")
    services.kill_switch_engage(actor=writer, flag=first, reason="recall 24V-001")
    # When the kill switch of another flag is engaged
    outcome = services.kill_switch_engage(actor=writer, flag=second, reason="thermal event")
    # Then that flag is killed as well, with its own rule and reason
    second.refresh_from_db()
    assert (outcome.applied, outcome.audit_actions, second.version) == (True, ["KILL_SWITCH"], 2)
    assert killed(second) == [("kill_switch", True, {"force_disabled": True, "reason": "thermal event"})]


def test_kill_switch_engage__after_a_lift__engaged_again() -> None:
    # Given a flag whose kill switch was engaged and lifted
    writer = actor("WRITE")
    flag = FlagFactory(key="seat.massage")
    services.kill_switch_engage(actor=writer, flag=flag, reason="recall 24V-001")
    services.kill_switch_lift(actor=writer, flag=flag)
    # When it is engaged again
    outcome = services.kill_switch_engage(actor=writer, flag=flag, reason="recall 24V-002")
    # Then the same rule is engaged again with the new reason, and it is audited
    flag.refresh_from_db()
    assert (outcome.audit_actions, flag.version) == (["KILL_SWITCH"], 4)
    assert killed(flag) == [("kill_switch", True, {"force_disabled": True, "reason": "recall 24V-002"})]
    assert [action for _, action, _ in audit_trail()] == ["KILL_SWITCH", "LIFT_KILL_SWITCH", "KILL_SWITCH"]


def test_kill_switch_engage__already_engaged__outcome_names_the_engaged_rule_and_nothing_changed() -> None:
    # Given a killed flag
    writer = actor("WRITE")
    flag = FlagFactory(key="seat.massage")
    rule = services.kill_switch_engage(actor=writer, flag=flag, reason="recall 24V-001").rule
    before, trail = state(flag), audit_trail()
    # When it is killed again
    outcome = services.kill_switch_engage(actor=writer, flag=flag, reason="again")
    # Then the answer is the rule already engaged; nothing changed, nothing audited
    assert (outcome.applied, outcome.rule, outcome.audit_actions) == (True, rule, [])
    assert state(flag) == before
    assert audit_trail() == trail


@pytest.mark.parametrize("reason", ["", "   ", None])
def test_kill_switch_engage__no_reason__refused_naming_reason_and_nothing_changed(reason: Any) -> None:
    # Given a flag
    flag = FlagFactory(key="seat.massage")
    before, trail = state(flag), audit_trail()
    # When its kill switch is engaged without a reason
    with pytest.raises(ValidationError) as refused:
        services.kill_switch_engage(actor=actor("WRITE"), flag=flag, reason=reason)
    # Then it is refused for the reason field; nothing changed
    assert refused.value.message_dict == {"reason": ["say why the flag is killed"]}
    assert state(flag) == before
    assert audit_trail() == trail


def test_kill_switch_engage__read_user__permission_denied_and_nothing_changed() -> None:
    flag = FlagFactory(key="seat.massage")
    before, trail = state(flag), audit_trail()
    with pytest.raises(PermissionDenied) as refused:
        services.kill_switch_engage(actor=actor("READ", "reader"), flag=flag, reason="thermal event")
    assert str(refused.value) == "reader may not engage the kill switch of seat.massage"
    assert state(flag) == before
    assert audit_trail() == trail


def test_kill_switch_engage__archived_flag__conflict_archived_and_nothing_changed() -> None:
    flag = FlagFactory(key="seat.massage", archived_at=timezone.now())
    before, trail = state(flag), audit_trail()
    with pytest.raises(Conflict) as refused:
        services.kill_switch_engage(actor=actor("WRITE"), flag=flag, reason="thermal event")
    assert (refused.value.code, str(refused.value)) == ("archived", "flag seat.massage is archived")
    assert state(flag) == before
    assert audit_trail() == trail


def test_kill_switch_lift__two_flags_killed__only_this_one_lifted() -> None:
    # Given two killed flags
    writer = actor("WRITE")
    first, second = FlagFactory(key="seat.massage"), FlagFactory(key="seat.heating")
    services.kill_switch_engage(actor=writer, flag=first, reason="recall 24V-001")
    services.kill_switch_engage(actor=writer, flag=second, reason="recall 24V-002")
    other = {k: v for k, v in state(second).items() if k != "revisions"}  # revisions are per environment
    # When the first one's kill switch is lifted
    outcome = services.kill_switch_lift(actor=writer, flag=first)
    # Then only that flag is lifted; the other stays killed, untouched
    assert outcome.audit_actions == ["LIFT_KILL_SWITCH"]
    assert [enabled for _, enabled, _ in killed(first)] == [False]
    assert {k: v for k, v in state(second).items() if k != "revisions"} == other


def test_kill_switch_lift__targeting_rule_enabled__only_the_kill_switch_disabled_and_audited() -> None:
    # Given a killed flag that also has an enabled targeting rule
    writer = actor("WRITE")
    flag = FlagFactory(key="seat.massage")
    whitelist = services.rule_create(actor=writer, flag=flag, type="vehicle_whitelist", priority=5,
                                     conditions={"vins": ["KMHXX00XXXX000001"]}).rule
    rule = services.kill_switch_engage(actor=writer, flag=flag, reason="recall 24V-001").rule
    assert whitelist is not None and rule is not None
    before = snapshots.rule_to_dict(rule)
    # When the kill switch is lifted
    services.kill_switch_lift(actor=writer, flag=flag)
    # Then only the kill switch rule is disabled, and the entry shows it before and after
    assert dict(Rule.objects.filter(flag=flag).values_list("type", "enabled")) == {
        "vehicle_whitelist": True, "kill_switch": False}
    entry = AuditEntry.objects.get(action="LIFT_KILL_SWITCH")
    assert (entry.object_type, entry.object_id, entry.before, entry.after) == (
        "rule", str(rule.pk), before, {**before, "enabled": False})


def test_kill_switch_lift__not_killed__conflict_not_killed() -> None:
    flag = FlagFactory(key="seat.massage")
    with pytest.raises(Conflict) as refused:
        services.kill_switch_lift(actor=actor("WRITE"), flag=flag)
    assert (refused.value.code, str(refused.value)) == ("not_killed", "flag seat.massage has no engaged kill switch")


def test_kill_switch_engage__rules_present_then_again_after_lift__rule_on_top_and_audited_before_after() -> None:
    # Given a flag with rules up to priority 40
    writer = actor("WRITE")
    flag = FlagFactory(key="seat.massage")
    services.rule_create(actor=writer, flag=flag, type="vehicle_whitelist", priority=40,
                         conditions={"vins": ["KMHXX00XXXX000001"]})
    # When its kill switch is engaged, lifted and engaged again
    rule = services.kill_switch_engage(actor=writer, flag=flag, reason="recall 24V-001").rule
    assert rule is not None
    first = snapshots.rule_to_dict(rule)
    services.kill_switch_lift(actor=writer, flag=flag)
    lifted = {**first, "enabled": False}
    services.kill_switch_engage(actor=writer, flag=flag, reason="recall 24V-002")
    # Then the rule sits 1000 above the others, and each entry shows the rule before and after
    assert rule.priority == 1040
    entries = list(AuditEntry.objects.filter(action="KILL_SWITCH").order_by("seq")
                   .values_list("object_type", "object_id", "before", "after"))
    again = {**first, "conditions": {"force_disabled": True, "reason": "recall 24V-002"}}
    assert entries == [("rule", str(rule.pk), None, first), ("rule", str(rule.pk), lifted, again)]


def test_kill_switch_engage__unknown_flag__not_found() -> None:
    with pytest.raises(NotFound) as refused:
        services.kill_switch_engage(actor=actor("WRITE"), flag="seat.nothing", reason="thermal event")
    assert str(refused.value) == "no flag seat.nothing"


def test_kill_switch__no_other_rules__engaged_at_1000_and_lift_outcome_names_the_rule() -> None:
    # Given a flag without rules
    writer = actor("WRITE")
    flag = FlagFactory(key="seat.massage")
    # When its kill switch is engaged, then lifted
    rule = services.kill_switch_engage(actor=writer, flag=flag, reason="recall 24V-001").rule
    lifted = services.kill_switch_lift(actor=writer, flag=flag)
    # Then the rule sat at priority 1000, and the lift's outcome is that rule
    assert rule is not None and rule.priority == 1000
    assert lifted.rule == rule


def test_flag_update__flag_object_deleted_meanwhile__not_found_naming_its_key() -> None:
    flag = FlagFactory(key="seat.massage")
    Flag.objects.filter(pk=flag.pk).delete()
    with pytest.raises(NotFound) as refused:
        services.flag_update(actor=actor("WRITE"), flag=flag, changes={"name": "X"})
    assert str(refused.value) == "no flag seat.massage"


def test_kill_switch_by_rule__created_or_enabled__a_delivery_event_like_the_engage_door() -> None:
    from flags.models import KillSwitchEvent
    from tests.factories import VehicleFactory

    VehicleFactory(vin="KMHXX00XXXX000001")
    writer = actor("WRITE", "writer")
    flag = FlagFactory(key="seat.massage")
    # When a kill-switch rule is created directly (the API's and the admin's rule paths)
    outcome = services.rule_create(actor=writer, flag=flag, type="kill_switch", priority=1000,
                                   conditions={"force_disabled": True, "reason": "recall 24V-002"})
    # Then the kill switch has its delivery record, as through the engage door
    event = KillSwitchEvent.objects.get(flag=flag)
    assert (event.rule_id, event.reason, event.engaged_by, event.targeted_all) == (
        outcome.rule.pk, "recall 24V-002", "writer", 1)
    # And a change that leaves it engaged makes no second one; disabling and enabling again does
    services.flag_update(actor=writer, flag=flag, changes={"name": "Seat massage v2"})
    assert KillSwitchEvent.objects.filter(flag=flag).count() == 1
    services.rule_update(actor=writer, flag=flag, rule_id=outcome.rule.pk, enabled=False)
    services.rule_update(actor=writer, flag=flag, rule_id=outcome.rule.pk, enabled=True)
    assert KillSwitchEvent.objects.filter(flag=flag).count() == 2


def test_kill_switch_engage__the_door__one_event_with_the_reason_given() -> None:
    from flags.models import KillSwitchEvent

    flag = FlagFactory(key="seat.massage")
    outcome = services.kill_switch_engage(actor=actor("WRITE", "writer"), flag=flag, reason="  thermal event ")
    assert outcome.kill_switch_event == KillSwitchEvent.objects.get(flag=flag)
    assert outcome.kill_switch_event.reason == "thermal event"
