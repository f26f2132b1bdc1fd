"""The service layer: validation, versions, audit, and the ASIL-D two-person rule."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from audit.models import AuditEntry
from core.errors import Conflict, PermissionDenied
from flags import services, snapshots
from flags.models import ChangeRequest, Flag, Revision, Rule
from tests.factories import FlagFactory, RuleFactory, actor

pytestmark = pytest.mark.django_db


def test_flag_create__valid__saved_with_audit_and_revision() -> None:
    # Given a WRITE user
    writer = actor("WRITE")
    # When they create a flag
    flag = services.flag_create(actor=writer, key="hvac.eco", name="Eco HVAC", default_value=False)
    # Then it is saved at version 1, audited, and the environment revision moved
    assert Flag.objects.get(key="hvac.eco").version == 1
    entry = AuditEntry.objects.get(flag_key="hvac.eco")
    assert (entry.action, entry.actor, entry.after["key"]) == ("CREATE_FLAG", writer.label, "hvac.eco")
    assert Revision.objects.get(environment="production").value == 1
    assert flag.created_by == writer.user


@pytest.mark.parametrize(
    ("fields", "bad_field"),
    [
        ({"key": "Bad Key"}, "key"),
        ({"key": "x"}, "key"),
        ({"type": "boolean", "default_value": "yes"}, "default_value"),
        ({"type": "number", "default_value": "3"}, "default_value"),
        ({"type": "colour", "default_value": 1}, "type"),
        ({"safety_level": "ASIL_X"}, "safety_level"),
        ({"environment": "prod"}, "environment"),
        ({"ttl_seconds": 5}, "ttl_seconds"),
        ({"safety_level": "ASIL_D", "enabled": True}, "enabled"),
    ],
)
def test_flag_create__invalid__refused_naming_field_and_nothing_saved(fields: dict, bad_field: str) -> None:
    writer = actor("WRITE")
    arguments = {"key": "ok.key", "name": "Name", "default_value": False, **fields}
    with pytest.raises(ValidationError) as caught:
        services.flag_create(actor=writer, **arguments)
    assert bad_field in caught.value.message_dict
    assert not Flag.objects.exists()
    assert not AuditEntry.objects.exists()


def test_flag_create__duplicate_key__refused() -> None:
    FlagFactory(key="dup.key")
    with pytest.raises(ValidationError) as caught:
        services.flag_create(actor=actor("WRITE"), key="dup.key", name="Again")
    assert "key" in caught.value.message_dict
    assert Flag.objects.count() == 1


def test_flag_create__read_user__permission_denied() -> None:
    with pytest.raises(PermissionDenied):
        services.flag_create(actor=actor("READ"), key="read.only", name="No")
    assert not Flag.objects.exists()


def test_flag_update__key_or_type__immutable() -> None:
    flag = FlagFactory()
    for change in ({"key": "new.key"}, {"type": "string"}):
        with pytest.raises(ValidationError) as caught:
            services.flag_update(actor=actor("WRITE"), flag=flag, changes=change)
        assert next(iter(change)) in caught.value.message_dict
    flag.refresh_from_db()
    assert flag.version == 1


def test_flag_update__every_applied_change__increments_version() -> None:
    writer = actor("WRITE")
    flag = FlagFactory(enabled=False)
    services.flag_update(actor=writer, flag=flag, changes={"name": "Renamed"})
    services.flag_set_enabled(actor=writer, flag=flag, enabled=True)
    outcome = services.rule_create(actor=writer, flag=flag, type="vehicle_whitelist",
                                   conditions={"vins": ["KMHXX00XXXX000009"]})
    services.rule_update(actor=writer, flag=flag, rule_id=outcome.rule.pk, priority=99)
    services.rule_delete(actor=writer, flag=flag, rule_id=outcome.rule.pk)
    flag.refresh_from_db()
    assert flag.version == 6
    assert list(AuditEntry.objects.order_by("seq").values_list("action", flat=True)) == [
        "UPDATE_FLAG", "ENABLE_FLAG", "CREATE_RULE", "UPDATE_RULE", "DELETE_RULE",
    ]


def test_rule_create__invalid_conditions__refused_naming_field() -> None:
    flag = FlagFactory()
    cases = [
        {"type": "vehicle_whitelist", "conditions": {"vins": ["not-a-vin"]}},
        {"type": "vehicle_target", "conditions": {"sw_version": ">= two"}},
        {"type": "user_attribute", "conditions": {"attribute": "trim", "operator": "like", "values": ["x"]}},
        {"type": "percentage_rollout", "conditions": {"rollout_percentage": 50, "variants": [
            {"key": "a", "weight": 60}, {"key": "b", "weight": 30}]}},
        {"type": "percentage_rollout", "conditions": {"rollout_percentage": 101}},
        {"type": "kill_switch", "conditions": {"force_disabled": True}},
    ]
    for fields in cases:
        with pytest.raises(ValidationError) as caught:
            services.rule_create(actor=actor("WRITE"), flag=flag, **fields)
        assert "conditions" in caught.value.message_dict, fields
    assert not Rule.objects.exists()
    flag.refresh_from_db()
    assert flag.version == 1


def test_rule_create__same_type_and_priority__refused() -> None:
    rule = RuleFactory(priority=5)
    with pytest.raises(ValidationError) as caught:
        services.rule_create(actor=actor("WRITE"), flag=rule.flag, type=rule.type, priority=5,
                             conditions={"vins": ["KMHXX00XXXX000002"]})
    assert "priority" in caught.value.message_dict
    assert Rule.objects.count() == 1


def test_rule_create__value_of_wrong_type__refused() -> None:
    flag = FlagFactory(type="number", default_value=1)
    with pytest.raises(ValidationError) as caught:
        services.rule_create(actor=actor("WRITE"), flag=flag, type="vehicle_whitelist",
                             conditions={"vins": ["KMHXX00XXXX000002"]}, value="fast")
    assert "value" in caught.value.message_dict


def test_flag_archive__archived__hidden_from_snapshot_and_frozen(on_commit) -> None:
    writer = actor("WRITE")
    flag = FlagFactory(key="old.flag")
    with on_commit():
        services.flag_archive(actor=writer, flag=flag)
    flag.refresh_from_db()
    assert flag.archived_at is not None
    assert Flag.objects.filter(key="old.flag").exists()  # archived, never deleted
    result = snapshots.compiled("production").evaluate("old.flag", "KMHXX00XXXX000001", default=True)
    assert (result.reason, result.error_code, result.value) == ("ERROR", "FLAG_NOT_FOUND", True)
    with pytest.raises(Conflict):
        services.flag_update(actor=writer, flag=flag, changes={"name": "again"})


def test_kill_switch__engaged__served_to_vehicles_after_commit(on_commit) -> None:
    flag = FlagFactory(key="seat.massage", enabled=True)
    RuleFactory(flag=flag, type="percentage_rollout", conditions={"rollout_percentage": 100})
    assert snapshots.compiled("production").evaluate("seat.massage", "KMHXX00XXXX000001").value is True
    with on_commit():
        outcome = services.kill_switch_engage(actor=actor("WRITE"), flag=flag, reason="thermal event")
    assert outcome.applied
    result = snapshots.compiled("production").evaluate("seat.massage", "KMHXX00XXXX000001")
    assert (result.value, result.reason, result.variant) == (False, "KILL_SWITCH", "killed")


def test_kill_switch__engage_twice__idempotent() -> None:
    flag = FlagFactory()
    writer = actor("WRITE")
    services.kill_switch_engage(actor=writer, flag=flag, reason="one")
    services.kill_switch_engage(actor=writer, flag=flag, reason="two")
    assert Rule.objects.filter(flag=flag, type="kill_switch").count() == 1
    assert AuditEntry.objects.filter(action="KILL_SWITCH").count() == 1


# -- ASIL-D two-person rule -------------------------------------------------------------------


@pytest.fixture
def asil_d_flag() -> Flag:
    return FlagFactory(key="brake.blend", safety_level="ASIL_D", enabled=False)


def test_asil_d__change__held_as_change_request_not_applied(asil_d_flag: Flag) -> None:
    outcome = services.flag_set_enabled(actor=actor("WRITE"), flag=asil_d_flag, enabled=True, rationale="HARA-1")
    asil_d_flag.refresh_from_db()
    assert not outcome.applied
    assert (asil_d_flag.enabled, asil_d_flag.version) == (False, 1)
    request = outcome.change_request
    assert request.before["enabled"] is False and request.after["enabled"] is True
    assert request.base_version == 1 and request.rationale == "HARA-1"


def test_asil_d__change_without_rationale__refused(asil_d_flag: Flag) -> None:
    with pytest.raises(ValidationError) as caught:
        services.flag_set_enabled(actor=actor("WRITE"), flag=asil_d_flag, enabled=True)
    assert "rationale" in caught.value.message_dict
    assert not ChangeRequest.objects.exists()


def test_asil_d__approved_by_other_safety_user__applied_with_audit(asil_d_flag: Flag) -> None:
    request = services.flag_set_enabled(actor=actor("WRITE"), flag=asil_d_flag, enabled=True,
                                        rationale="HARA-1").change_request
    outcome = services.change_request_approve(actor=actor("SAFETY"), change_request=request, comment="ok")
    asil_d_flag.refresh_from_db()
    request.refresh_from_db()
    assert (asil_d_flag.enabled, asil_d_flag.version, request.status) == (True, 2, "approved")
    assert outcome.audit_actions == ["ENABLE_FLAG", "APPROVE_CHANGE"]
    assert AuditEntry.objects.filter(change_request_id=request.pk).count() == 3


@pytest.mark.parametrize("approver_role", ["READ", "WRITE", "ADMIN"])
def test_asil_d__approved_by_non_safety__refused_and_nothing_changed(asil_d_flag: Flag, approver_role: str) -> None:
    request = services.flag_set_enabled(actor=actor("WRITE"), flag=asil_d_flag, enabled=True,
                                        rationale="HARA-1").change_request
    with pytest.raises(PermissionDenied):
        services.change_request_approve(actor=actor(approver_role, "other"), change_request=request)
    asil_d_flag.refresh_from_db()
    request.refresh_from_db()
    assert (asil_d_flag.enabled, request.status) == (False, "pending")


def test_asil_d__requester_approves_own__refused(asil_d_flag: Flag) -> None:
    both = actor("WRITE,SAFETY")
    request = services.flag_set_enabled(actor=both, flag=asil_d_flag, enabled=True, rationale="r").change_request
    with pytest.raises(PermissionDenied):
        services.change_request_approve(actor=both, change_request=request)
    asil_d_flag.refresh_from_db()
    assert asil_d_flag.enabled is False


def test_asil_d__flag_changed_since_request__conflict(asil_d_flag: Flag) -> None:
    writer = actor("WRITE")
    first = services.flag_update(actor=writer, flag=asil_d_flag, changes={"name": "A"}, rationale="r").change_request
    second = services.flag_update(actor=writer, flag=asil_d_flag, changes={"name": "B"}, rationale="r").change_request
    safety = actor("SAFETY")
    services.change_request_approve(actor=safety, change_request=second)
    with pytest.raises(Conflict) as caught:
        services.change_request_approve(actor=safety, change_request=first)
    assert caught.value.code == "stale"
    asil_d_flag.refresh_from_db()
    assert asil_d_flag.name == "B"


def test_asil_d__request_edited_after_submission__refused(asil_d_flag: Flag) -> None:
    request = services.flag_set_enabled(actor=actor("WRITE"), flag=asil_d_flag, enabled=True,
                                        rationale="r").change_request
    ChangeRequest.objects.filter(pk=request.pk).update(payload={"changes": {"enabled": True, "ttl_seconds": 60}})
    with pytest.raises(Conflict) as caught:
        services.change_request_approve(actor=actor("SAFETY"), change_request=request)
    assert caught.value.code == "tampered"
    asil_d_flag.refresh_from_db()
    assert (asil_d_flag.enabled, asil_d_flag.ttl_seconds) == (False, 604800)


def test_asil_d__expired_request__refused(asil_d_flag: Flag) -> None:
    from datetime import timedelta

    from django.utils import timezone

    request = services.flag_set_enabled(actor=actor("WRITE"), flag=asil_d_flag, enabled=True,
                                        rationale="r").change_request
    ChangeRequest.objects.filter(pk=request.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(Conflict) as caught:
        services.change_request_approve(actor=actor("SAFETY"), change_request=request)
    assert caught.value.code == "expired"
    asil_d_flag.refresh_from_db()
    assert asil_d_flag.enabled is False


def test_asil_d__reject_needs_reason_then_final(asil_d_flag: Flag) -> None:
    request = services.flag_set_enabled(actor=actor("WRITE"), flag=asil_d_flag, enabled=True,
                                        rationale="r").change_request
    safety = actor("SAFETY")
    with pytest.raises(ValidationError):
        services.change_request_reject(actor=safety, change_request=request, reason=" ")
    services.change_request_reject(actor=safety, change_request=request, reason="no HARA update")
    with pytest.raises(Conflict):
        services.change_request_approve(actor=actor("SAFETY", "safety-b"), change_request=request)
    asil_d_flag.refresh_from_db()
    assert asil_d_flag.enabled is False


def test_asil_d__kill_switch__applies_at_once_but_lifting_needs_approval(asil_d_flag: Flag) -> None:
    writer = actor("WRITE")
    engaged = services.kill_switch_engage(actor=writer, flag=asil_d_flag, reason="recall 24V-001")
    assert engaged.applied
    lift = services.kill_switch_lift(actor=writer, flag=asil_d_flag, rationale="fixed in 3.0.1")
    assert not lift.applied
    assert Rule.objects.get(flag=asil_d_flag, type="kill_switch").enabled is True
    # Deleting or disabling the kill-switch rule directly is the same lift, also held.
    rule_id = engaged.rule.pk
    assert not services.rule_delete(actor=writer, flag=asil_d_flag, rule_id=rule_id, rationale="r").applied
    assert not services.rule_update(actor=writer, flag=asil_d_flag, rule_id=rule_id, enabled=False,
                                    rationale="r").applied
    assert Rule.objects.get(flag=asil_d_flag, type="kill_switch").enabled is True


def test_asil_d__lowering_safety_level__needs_approval(asil_d_flag: Flag) -> None:
    outcome = services.flag_update(actor=actor("WRITE"), flag=asil_d_flag, changes={"safety_level": "ASIL_B"},
                                   rationale="reclassified")
    asil_d_flag.refresh_from_db()
    assert not outcome.applied and asil_d_flag.safety_level == "ASIL_D"


def test_raising_to_asil_d__applies_at_once() -> None:
    flag = FlagFactory(safety_level="ASIL_B")
    outcome = services.flag_update(actor=actor("WRITE"), flag=flag, changes={"safety_level": "ASIL_D"})
    flag.refresh_from_db()
    assert outcome.applied and flag.safety_level == "ASIL_D"


# -- grouped changes and no-op changes --------------------------------------------------------


def test_flag_change__several_steps__one_version_and_audit_per_step() -> None:
    flag = FlagFactory(enabled=False)
    rule = RuleFactory(flag=flag, priority=5)
    steps = [
        services.update_step({"name": "Grouped", "enabled": True}),
        services.rule_update_step(rule.pk, priority=50),
        services.rule_create_step(type="vehicle_target", conditions={"regions": ["eu-west"]}),
    ]
    outcome = services.flag_change(actor=actor("WRITE"), flag=flag, steps=steps)
    flag.refresh_from_db()
    assert outcome.applied and (flag.name, flag.enabled, flag.version) == ("Grouped", True, 2)
    assert list(AuditEntry.objects.order_by("seq").values_list("action", flat=True)) == [
        "UPDATE_FLAG", "UPDATE_RULE", "CREATE_RULE"]


def test_flag_change__some_steps_invalid__every_refusal_reported_and_nothing_applied() -> None:
    flag = FlagFactory()
    steps = [
        services.update_step({"name": "Fine"}),
        services.rule_create_step(type="vehicle_whitelist", conditions={"vins": ["nope"]}),
        services.rule_create_step(type="percentage_rollout", conditions={"rollout_percentage": 150}),
    ]
    with pytest.raises(services.StepsRefused) as caught:
        services.flag_change(actor=actor("WRITE"), flag=flag, steps=steps)
    assert sorted(caught.value.errors) == [1, 2]
    flag.refresh_from_db()
    assert flag.name != "Fine" and flag.version == 1
    assert not Rule.objects.exists() and not AuditEntry.objects.exists()


def test_flag_change__asil_d__one_change_request_applied_whole_on_approval(asil_d_flag: Flag) -> None:
    steps = [
        services.update_step({"enabled": True}),
        services.rule_create_step(type="vehicle_target", conditions={"models": ["ev6"]}),
    ]
    request = services.flag_change(actor=actor("WRITE"), flag=asil_d_flag, steps=steps,
                                   rationale="SC-7").change_request
    assert request.operation == "batch" and ChangeRequest.objects.count() == 1
    assert (request.after["enabled"], len(request.after["rules"])) == (True, 1)
    assert not Rule.objects.exists()
    services.change_request_approve(actor=actor("SAFETY"), change_request=request)
    asil_d_flag.refresh_from_db()
    assert (asil_d_flag.enabled, asil_d_flag.version, Rule.objects.count()) == (True, 2, 1)


def test_flag_change__owner_team_in_a_group__checked_like_a_single_change() -> None:
    from django.contrib.auth.models import Group

    Group.objects.create(name="powertrain")
    flag = FlagFactory()
    steps = [services.update_step({"owner_team": "powertrain"}), services.update_step({"name": "x"})]
    with pytest.raises(ValidationError) as caught:
        services.flag_change(actor=actor("WRITE"), flag=flag, steps=steps)
    assert "owner_team" in caught.value.message_dict
    flag.refresh_from_db()
    assert flag.owner_team is None and flag.version == 1


def test_flag_update__same_values__no_new_version_and_no_audit() -> None:
    flag = FlagFactory(name="Same")
    outcome = services.flag_update(actor=actor("WRITE"), flag=flag, changes={"name": "Same"})
    flag.refresh_from_db()
    assert outcome.applied and outcome.audit_actions == [] and flag.version == 1
    assert not AuditEntry.objects.exists()
    assert not Revision.objects.exists()


def test_flag_change__flag_moved_past_expected_version__stale_and_nothing_applied() -> None:
    # Given a flag someone changed after the caller loaded it at version 1
    flag = FlagFactory(name="Loaded")
    writer = actor("WRITE")
    services.flag_update(actor=writer, flag=flag, changes={"description": "meanwhile"})
    # When the caller saves what it decided at version 1
    with pytest.raises(Conflict) as caught:
        services.flag_change(actor=writer, flag=flag, steps=[services.update_step({"name": "Mine"})],
                             expected_version=1)
    # Then it is refused and the other change stands alone
    assert caught.value.code == "stale"
    flag.refresh_from_db()
    assert (flag.name, flag.version) == ("Loaded", 2)
    assert AuditEntry.objects.count() == 1
