"""Deciding change requests: each refusal with its stable code and message and nothing
changed; rejection and withdrawal recorded exactly, in the request and in the audit.
Written against mutants of flags.services that survived."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from audit.models import AuditEntry
from core.errors import Conflict, NotFound, PermissionDenied
from flags import services
from flags.models import ChangeRequest, Flag
from tests.factories import FlagFactory, actor
from tests.governance.conftest import audit_trail, state

pytestmark = pytest.mark.django_db

R = "HARA-2026-017"




def record(request: ChangeRequest) -> dict[str, Any]:
    return ChangeRequest.objects.filter(pk=request.pk).values().get()


def entry(action: str) -> tuple[Any, ...]:
    found = AuditEntry.objects.get(action=action)
    return (found.actor, found.flag_id, found.flag_key, found.object_type, found.object_id, found.change_request_id,
            found.before, found.after)


def _expire(request: ChangeRequest) -> str:
    expires_at = timezone.now() - timedelta(seconds=1)
    ChangeRequest.objects.filter(pk=request.pk).update(expires_at=expires_at)
    return f"change request {request.pk} expired at {expires_at:%Y-%m-%d %H:%M} UTC"


def _tamper(request: ChangeRequest) -> str:
    ChangeRequest.objects.filter(pk=request.pk).update(payload={"changes": {"enabled": True, "ttl_seconds": 60}})
    return f"change request {request.pk} was altered after it was submitted"


def _move_flag(request: ChangeRequest) -> str:
    Flag.objects.filter(pk=request.flag_id).update(version=2)
    return "flag brake.blend changed since the request was made (version 1 -> 2); make a new request"


def _archive_flag(request: ChangeRequest) -> str:
    Flag.objects.filter(pk=request.flag_id).update(archived_at=timezone.now())
    return "flag brake.blend is archived"


@pytest.mark.parametrize(("arrange", "code"), [(_expire, "expired"), (_tamper, "tampered"),
                                                (_move_flag, "stale"), (_archive_flag, "archived")])
def test_change_request_approve__not_approvable__conflict_with_code_and_message_and_nothing_changed(
    brakes: Flag, pending: ChangeRequest, arrange: Any, code: str
) -> None:
    # Given a pending request that can no longer be approved
    message = arrange(pending)
    before, request_before, trail = state(brakes), record(pending), audit_trail()
    # When a SAFETY engineer approves it
    with pytest.raises(Conflict) as refused:
        services.change_request_approve(actor=actor("SAFETY"), change_request=pending)
    # Then it is refused with the code and a message that says why; nothing changed
    assert (refused.value.code, str(refused.value)) == (code, message)
    assert state(brakes) == before
    assert record(pending) == request_before
    assert audit_trail() == trail


@pytest.mark.parametrize("reason", ["", "  ", None])
def test_change_request_reject__no_reason__refused_naming_reason_and_nothing_changed(
    brakes: Flag, pending: ChangeRequest, reason: Any
) -> None:
    request_before, trail = record(pending), audit_trail()
    with pytest.raises(ValidationError) as refused:
        services.change_request_reject(actor=actor("SAFETY"), change_request=pending, reason=reason)
    assert refused.value.message_dict == {"reason": ["a rejection needs a reason"]}
    assert record(pending) == request_before
    assert audit_trail() == trail


def test_change_request_reject__safety_user__request_and_audit_entry_exact(brakes: Flag, pending: ChangeRequest) -> None:
    # Given a SAFETY engineer
    safety = actor("SAFETY", "safety-1")
    # When they reject the request
    services.change_request_reject(actor=safety, change_request=pending, reason="  HARA not updated ")
    # Then the stored request says who, when and why, and the audit entry names the request
    stored = record(pending)
    assert (stored["status"], stored["decided_by_id"], stored["decided_by_label"], stored["decision_comment"]) == \
        ("rejected", safety.user.pk, "safety-1", "HARA not updated")
    assert stored["decided_at"] is not None
    assert entry("REJECT_CHANGE") == ("safety-1", brakes.pk, "brake.blend", "change_request", str(pending.pk),
                                      pending.pk, None, {"reason": "HARA not updated"})


def test_change_request_withdraw__requester__request_and_audit_entry_exact(brakes: Flag) -> None:
    # Given a request of a WRITE engineer
    requester = actor("WRITE", "requester")
    request = services.flag_set_enabled(actor=requester, flag=brakes, enabled=True, rationale=R).change_request
    assert request is not None
    # When they withdraw it
    services.change_request_withdraw(actor=requester, change_request=request)
    # Then the stored request says who and when, and the audit entry names the request
    stored = record(request)
    assert (stored["status"], stored["decided_by_id"], stored["decided_by_label"]) == ("withdrawn", None, "requester")
    assert stored["decided_at"] is not None
    assert entry("WITHDRAW_CHANGE") == ("requester", brakes.pk, "brake.blend", "change_request", str(request.pk),
                                        request.pk, None, None)


@pytest.mark.parametrize("decide", ["approve", "reject", "withdraw"])
def test_change_request_withdraw__already_decided__conflict_already_decided_and_nothing_changed(
    brakes: Flag, pending: ChangeRequest, decide: str
) -> None:
    # Given a request decided already (approved, rejected or withdrawn)
    if decide == "approve":
        services.change_request_approve(actor=actor("SAFETY"), change_request=pending)
    elif decide == "reject":
        services.change_request_reject(actor=actor("SAFETY"), change_request=pending, reason="no")
    else:
        services.change_request_withdraw(actor=actor("WRITE", "requester"), change_request=pending)
    status = record(pending)["status"]
    before, request_before, trail = state(brakes), record(pending), audit_trail()
    # When the requester withdraws it
    with pytest.raises(Conflict) as refused:
        services.change_request_withdraw(actor=actor("WRITE", "requester"), change_request=pending)
    # Then it is refused: it is decided already; nothing changed
    assert (refused.value.code, str(refused.value)) == (
        "already_decided", f"change request {pending.pk} is {status} already")
    assert state(brakes) == before
    assert record(pending) == request_before
    assert audit_trail() == trail


def test_change_request_withdraw__someone_else__permission_denied_and_nothing_changed(
    brakes: Flag, pending: ChangeRequest
) -> None:
    request_before, trail = record(pending), audit_trail()
    with pytest.raises(PermissionDenied) as refused:
        services.change_request_withdraw(actor=actor("WRITE", "colleague"), change_request=pending)
    assert str(refused.value) == "only the requester can withdraw a change request"
    assert record(pending) == request_before
    assert audit_trail() == trail


def test_change_request_approve__unknown_request__not_found() -> None:
    with pytest.raises(NotFound) as refused:
        services.change_request_approve(actor=actor("SAFETY"), change_request=424242)
    assert str(refused.value) == "no change request 424242"


def test_change_request_approve__already_approved__conflict_already_decided_and_nothing_changed(
    brakes: Flag, pending: ChangeRequest
) -> None:
    services.change_request_approve(actor=actor("SAFETY", "safety-1"), change_request=pending)
    before, request_before, trail = state(brakes), record(pending), audit_trail()
    with pytest.raises(Conflict) as refused:
        services.change_request_approve(actor=actor("SAFETY", "safety-2"), change_request=pending)
    assert (refused.value.code, str(refused.value)) == (
        "already_decided", f"change request {pending.pk} is approved already")
    assert state(brakes) == before
    assert record(pending) == request_before
    assert audit_trail() == trail


def test_change_request_approve__without_comment__empty_comment_recorded(brakes: Flag, pending: ChangeRequest) -> None:
    # When a SAFETY engineer approves without a comment
    services.change_request_approve(actor=actor("SAFETY", "safety-1"), change_request=pending)
    # Then the request and the audit carry an empty comment, nothing made up
    assert record(pending)["decision_comment"] == ""
    assert entry("APPROVE_CHANGE")[-1] == {"comment": "", "operation": "enable_flag"}


def test_flag_update__asil_d__request_change_audit_entry_names_the_request(brakes: Flag, pending: ChangeRequest) -> None:
    # Given the request made by the fixture, Then its audit entry names it and carries the proposal
    actor_label, flag_id, flag_key, object_type, object_id, change_request_id, before, after = entry("REQUEST_CHANGE")
    assert (actor_label, flag_id, flag_key, object_type, object_id, change_request_id) == (
        "requester", brakes.pk, "brake.blend", "change_request", str(pending.pk), pending.pk)
    assert (before, after["operation"], after["rationale"]) == (pending.before, "enable_flag", R)


@pytest.mark.parametrize("rationale", ["", "   "])
def test_flag_update__asil_d_with_blank_rationale__refused_and_no_request(brakes: Flag, rationale: str) -> None:
    before, trail = state(brakes), audit_trail()
    with pytest.raises(ValidationError) as refused:
        services.flag_set_enabled(actor=actor("WRITE"), flag=brakes, enabled=True, rationale=rationale)
    assert refused.value.message_dict == {
        "rationale": ["changes to ASIL-D flags need a rationale (hazard analysis or safety-case reference)"]}
    assert state(brakes) == before
    assert not ChangeRequest.objects.exists()
    assert audit_trail() == trail


def test_kill_switch_lift__asil_d_without_rationale__refused_and_still_killed(brakes: Flag) -> None:
    # Given a killed ASIL-D flag
    services.kill_switch_engage(actor=actor("WRITE"), flag=brakes, reason="recall 24V-001")
    before = state(brakes)
    # When the kill switch is lifted without a rationale
    with pytest.raises(ValidationError) as refused:
        services.kill_switch_lift(actor=actor("WRITE", "writer-2"), flag=brakes)
    # Then the rationale is asked for; the flag stays killed and no request is made
    assert list(refused.value.message_dict) == ["rationale"]
    assert state(brakes) == before
    assert not ChangeRequest.objects.exists()


def test_flag_update__asil_d_change_to_same_values__refused_as_changing_nothing(brakes: Flag) -> None:
    # Given an ASIL-D flag, When a change request would set the name it already has
    with pytest.raises(ValidationError) as refused:
        services.flag_update(actor=actor("WRITE"), flag=brakes, changes={"name": brakes.name}, rationale=R)
    # Then there is nothing to approve
    assert refused.value.message_dict == {"__all__": ["the change would change nothing"]}
    assert not ChangeRequest.objects.exists()


def test_flag_update__refused__permission_stale_and_archived_each_with_its_message() -> None:
    # Given a flag owned by nobody, changed once since a writer loaded it, and an archived one
    flag = FlagFactory(key="ui.theme")
    gone = FlagFactory(key="ui.old", archived_at=timezone.now())
    writer = actor("WRITE", "writer")
    services.flag_update(actor=writer, flag=flag, changes={"name": "Theme"})
    # When a reader changes it, the writer changes it from version 1, and anyone changes the archived one
    with pytest.raises(PermissionDenied) as denied:
        services.flag_update(actor=actor("READ", "reader"), flag=flag, changes={"name": "X"})
    with pytest.raises(Conflict) as stale:
        services.flag_change(actor=writer, flag=flag, steps=[services.update_step({"name": "X"})],
                             expected_version=1)
    with pytest.raises(Conflict) as archived:
        services.flag_update(actor=writer, flag=gone, changes={"name": "X"})
    # Then each refusal says why
    assert str(denied.value) == "reader may not change flag ui.theme"
    assert (stale.value.code, str(stale.value)) == (
        "stale", "flag ui.theme changed since it was loaded (version 1 -> 2)")
    assert (archived.value.code, str(archived.value)) == (
        "archived", "flag ui.old is archived; archived flags do not change")
    assert Flag.objects.get(key="ui.theme").name == "Theme"


def test_change_request_approve__rule_creation__outcome_and_audit_entry_exact(brakes: Flag) -> None:
    # Given a request to add a rule to the ASIL-D flag
    outcome = services.rule_create(actor=actor("WRITE", "requester"), flag=brakes, type="vehicle_whitelist",
                                   conditions={"vins": ["KMHXX00XXXX000001"]}, rationale=R)
    request = outcome.change_request
    assert (outcome.flag.pk, outcome.audit_actions) == (brakes.pk, ["REQUEST_CHANGE"])
    assert request is not None
    assert sorted(entry("REQUEST_CHANGE")[-1]) == ["operation", "payload", "proposed", "rationale"]
    # When a SAFETY engineer approves it
    approved = services.change_request_approve(actor=actor("SAFETY", "safety-1"), change_request=request,
                                               comment="ok")
    # Then the outcome names the new rule, and the approval's entry names the request
    rule = brakes.rules.get()
    assert (approved.change_request, approved.rule, approved.audit_actions) == (
        None, rule, ["CREATE_RULE", "APPROVE_CHANGE"])
    assert entry("APPROVE_CHANGE") == ("safety-1", brakes.pk, "brake.blend", "change_request", str(request.pk),
                                       request.pk, None, {"comment": "ok", "operation": "create_rule"})
    created = AuditEntry.objects.get(action="CREATE_RULE")
    assert (created.object_type, created.object_id, created.change_request_id) == ("rule", str(rule.pk), request.pk)
