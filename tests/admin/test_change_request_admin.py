"""The approval queue: decisions only by the buttons, only by a second person, and refusals change nothing."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEntry
from core.actors import Actor
from flags import services
from flags.models import ChangeRequest, Flag
from tests.admin.conftest import ADMIN_IP, messages_of
from tests.factories import FlagFactory, RuleFactory, UserFactory

pytestmark = pytest.mark.django_db

QUEUE = reverse("admin:flags_changerequest_changelist")


@pytest.fixture
def writer() -> Any:
    return UserFactory(username="writer-requester", role="WRITE")


@pytest.fixture
def flag() -> Flag:
    flag = FlagFactory(key="brake.blend", safety_level="ASIL_D", enabled=False)
    RuleFactory(flag=flag, type="vehicle_target", priority=10, conditions={"models": ["ev6"]})
    return flag


@pytest.fixture
def request_(writer: Any, flag: Flag) -> ChangeRequest:
    outcome = services.flag_set_enabled(actor=Actor.for_user(writer), flag=flag, enabled=True,
                                        rationale="HARA-2026-017: field validation passed")
    assert outcome.change_request is not None
    return outcome.change_request


def url(name: str, request: ChangeRequest) -> str:
    return reverse(f"admin:flags_changerequest_{name}", args=[request.pk])


def snapshot(flag: Flag, request: ChangeRequest) -> tuple[Any, ...]:
    """Everything a refused decision must leave as it was."""
    flag.refresh_from_db()
    request.refresh_from_db()
    return (flag.enabled, flag.version, request.status, request.decided_by_id, request.decision_comment,
            AuditEntry.objects.count())


# -- the queue -----------------------------------------------------------------------------------------


def test_queue__pending_first_then_newest_with_expired_marked(login: Any, writer: Any, flag: Flag) -> None:
    actor = Actor.for_user(writer)
    decided = services.flag_update(actor=actor, flag=flag, changes={"name": "A"}, rationale="r").change_request
    services.change_request_reject(actor=Actor.for_user(UserFactory(username="s1", role="SAFETY")),
                                   change_request=decided, reason="no")
    expired = services.flag_update(actor=actor, flag=flag, changes={"name": "B"}, rationale="r").change_request
    ChangeRequest.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    live = services.flag_update(actor=actor, flag=flag, changes={"name": "C"}, rationale="r").change_request
    response = login("SAFETY").get(QUEUE)
    assert [r.pk for r in response.context["cl"].result_list] == [live.pk, expired.pk, decided.pk]
    html = response.content.decode()
    assert 'ff-status-expired">expired<' in html and 'ff-status-rejected">rejected<' in html


@pytest.mark.parametrize("query", ["status=pending", "status=expired", "status=approved", "operation__exact=enable_flag",
                                   "flag__safety_level__exact=ASIL_D", "mine=me", "mine=all", "q=brake"])
def test_queue__filters__render(login: Any, request_: ChangeRequest, query: str) -> None:
    assert login("SAFETY").get(f"{QUEUE}?{query}").status_code == 200


def test_queue__requester__sees_own_requests_by_default(login: Any, request_: ChangeRequest, flag: Flag) -> None:
    other = login("WRITE", username="other-writer")
    services.flag_update(actor=Actor.for_user(other.user), flag=flag, changes={"name": "X"}, rationale="r")
    mine = other.get(QUEUE)
    assert [r.requested_by for r in mine.context["cl"].result_list] == [other.user]
    assert any("Showing the change requests you made" in m for m in messages_of(mine))
    everyone = other.get(QUEUE + "?mine=all")
    assert len(everyone.context["cl"].result_list) == 2


def test_queue__no_add_change_or_delete_for_anyone(login: Any, request_: ChangeRequest, flag: Flag) -> None:
    client = login("ADMIN,SAFETY", is_superuser=True)
    before = snapshot(flag, request_)
    assert client.get(reverse("admin:flags_changerequest_add")).status_code == 403
    assert client.post(url("change", request_), {"status": "approved"}).status_code == 403
    assert client.post(url("delete", request_), {"post": "yes"}).status_code == 403
    assert snapshot(flag, request_) == before


# -- the decision page ------------------------------------------------------------------------------


def test_page__safety_user__diff_rationale_and_both_buttons(login: Any, request_: ChangeRequest) -> None:
    response = login("SAFETY").get(url("change", request_))
    html = response.content.decode()
    assert response.status_code == 200
    assert "HARA-2026-017: field validation passed" in html
    changed = [f.name for f in response.context["ff_diff"]["changed_fields"]]
    assert changed == ["enabled"]
    assert 'id="ff-approve"' in html and 'id="ff-reject"' in html and 'id="ff-withdraw"' not in html


def test_page__requester__no_decision_buttons_but_withdraw(login: Any, request_: ChangeRequest, writer: Any) -> None:
    client = login()
    client.force_login(writer)
    html = client.get(url("change", request_)).content.decode()
    assert 'id="ff-approve"' not in html and 'id="ff-reject"' not in html
    assert 'id="ff-withdraw"' in html
    assert "Only SAFETY engineers approve" in html


def test_page__creator_of_the_requesting_key__no_approve_button(login: Any, flag: Flag) -> None:
    # Given a request made through an unbound key that a SAFETY+ADMIN engineer created
    from accounts.models import ApiKey

    client = login("SAFETY,ADMIN")
    key = ApiKey.objects.create(name="script", key_prefix="crkey001", key_hash="1" * 64, role="ADMIN",
                                created_by=client.user)
    request = services.flag_update(actor=Actor.for_api_key(key), flag=flag, changes={"name": "via key"},
                                   rationale="r").change_request
    # Then the engineer is the requester: the page offers no decision, as the service would refuse it
    html = client.get(url("change", request)).content.decode()
    assert 'id="ff-approve"' not in html and 'id="ff-reject"' not in html


def test_page__rule_change__added_removed_changed_with_json_lines(login: Any, writer: Any, flag: Flag) -> None:
    rule = flag.rules.get()
    request = services.rule_update(actor=Actor.for_user(writer), flag=flag, rule_id=rule.pk,
                                   conditions={"models": ["ev6", "ev9"]}, rationale="r").change_request
    response = login("SAFETY").get(url("change", request))
    (change,) = response.context["ff_diff"]["rules"]
    assert change.kind == "changed"
    conditions = next(f for f in change.fields if f.name == "conditions")
    assert ("add", '+     "ev9"') in conditions.lines
    assert 'class="ff-line-add"' in response.content.decode()


def test_page__rule_added_and_removed__absent_side_shown_as_dash(login: Any, writer: Any, flag: Flag) -> None:
    old = flag.rules.get()
    steps = [services.rule_delete_step(old.pk),
             services.rule_create_step(type="vehicle_target", priority=40, conditions={"regions": ["eu-west"]})]
    request = services.flag_change(actor=Actor.for_user(writer), flag=flag, steps=steps, rationale="r").change_request
    response = login("SAFETY").get(url("change", request))
    removed, added = response.context["ff_diff"]["rules"]
    assert (removed.kind, added.kind) == ("removed", "added")
    removed_priority = next(f for f in removed.fields if f.name == "priority")
    added_priority = next(f for f in added.fields if f.name == "priority")
    assert (removed_priority.before_text, removed_priority.after_text) == (str(old.priority), "-")
    assert (added_priority.before_text, added_priority.after_text) == ("-", "40")
    assert "<td><pre class=\"ff-pre\">-</pre></td><td><pre class=\"ff-pre\">40</pre></td>" in response.content.decode()


def test_page__flag_changed_since__warns_approval_will_fail(login: Any, request_: ChangeRequest, flag: Flag) -> None:
    Flag.objects.filter(pk=flag.pk).update(version=5)
    response = login("SAFETY").get(url("change", request_))
    html = response.content.decode()
    assert "approving will fail" in html and 'id="ff-approve"' not in html


# -- decisions -------------------------------------------------------------------------------------------


def test_approve__other_safety_user__applied_with_audit_of_the_request(login: Any, request_: ChangeRequest,
                                                                      flag: Flag) -> None:
    client = login("SAFETY")
    response = client.post(url("approve", request_), {"comment": "Reviewed against SC-BRK-004"},
                           HTTP_X_REQUEST_ID="req-approve-1")
    assert response.status_code == 302 and response["Location"] == url("change", request_)
    flag.refresh_from_db()
    request_.refresh_from_db()
    assert (flag.enabled, flag.version, request_.status, request_.decided_by) == (True, 2, "approved", client.user)
    assert request_.decision_comment == "Reviewed against SC-BRK-004"
    approval = AuditEntry.objects.get(action="APPROVE_CHANGE")
    assert (approval.request_id, approval.ip, approval.actor) == ("req-approve-1", ADMIN_IP, client.user.username)
    assert AuditEntry.objects.get(action="ENABLE_FLAG").change_request_id == request_.pk
    assert any("Approved CR-" in m and "version 1 -> 2" in m for m in messages_of(response))


def test_approve__get__does_nothing(login: Any, request_: ChangeRequest, flag: Flag) -> None:
    before = snapshot(flag, request_)
    response = login("SAFETY").get(url("approve", request_))
    assert response.status_code == 302
    assert snapshot(flag, request_) == before


@pytest.mark.parametrize("role", ["READ", "WRITE", "ADMIN"])
def test_approve__not_safety__refused_nothing_changed(login: Any, request_: ChangeRequest, flag: Flag,
                                                      role: str) -> None:
    before = snapshot(flag, request_)
    response = login(role).post(url("approve", request_))
    assert any("Refused (permission_denied)" in m for m in messages_of(response))
    assert snapshot(flag, request_) == before


def test_approve__requester_who_is_also_safety__refused_nothing_changed(login: Any, flag: Flag) -> None:
    both = login("WRITE,SAFETY")
    request = services.flag_set_enabled(actor=Actor.for_user(both.user), flag=flag, enabled=True,
                                        rationale="r").change_request
    before = snapshot(flag, request)
    assert 'id="ff-approve"' not in both.get(url("change", request)).content.decode()
    response = both.post(url("approve", request))
    assert any("second person" in m for m in messages_of(response))
    assert snapshot(flag, request) == before


def test_approve__stale__refused_nothing_changed(login: Any, writer: Any, flag: Flag) -> None:
    actor = Actor.for_user(writer)
    first = services.flag_update(actor=actor, flag=flag, changes={"name": "A"}, rationale="r").change_request
    second = services.flag_update(actor=actor, flag=flag, changes={"name": "B"}, rationale="r").change_request
    client = login("SAFETY")
    client.post(url("approve", second))
    before = snapshot(flag, first)
    response = client.post(url("approve", first))
    assert any("Refused (stale)" in m for m in messages_of(response))
    assert snapshot(flag, first) == before
    assert flag.name == "B"


def test_approve__expired__refused_nothing_changed(login: Any, request_: ChangeRequest, flag: Flag) -> None:
    ChangeRequest.objects.filter(pk=request_.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    before = snapshot(flag, request_)
    response = login("SAFETY").post(url("approve", request_))
    assert any("Refused (expired)" in m for m in messages_of(response))
    assert snapshot(flag, request_) == before


def test_approve__tampered__refused_nothing_changed(login: Any, request_: ChangeRequest, flag: Flag) -> None:
    ChangeRequest.objects.filter(pk=request_.pk).update(payload={"changes": {"enabled": True, "ttl_seconds": 60}})
    client = login("SAFETY")
    assert "altered after it was submitted" in client.get(url("change", request_)).content.decode()
    before = snapshot(flag, request_)
    response = client.post(url("approve", request_))
    assert any("Refused (tampered)" in m for m in messages_of(response))
    assert snapshot(flag, request_) == before


def test_approve__already_decided__refused(login: Any, request_: ChangeRequest, flag: Flag) -> None:
    client = login("SAFETY")
    client.post(url("reject", request_), {"reason": "no HARA update"})
    before = snapshot(flag, request_)
    response = client.post(url("approve", request_))
    assert any("Refused (already_decided)" in m for m in messages_of(response))
    assert snapshot(flag, request_) == before


def test_reject__without_reason__refused_then_with_reason_rejected(login: Any, request_: ChangeRequest,
                                                                   flag: Flag) -> None:
    client = login("SAFETY")
    before = snapshot(flag, request_)
    refused = client.post(url("reject", request_), {"reason": "  "})
    assert any("a rejection needs a reason" in m for m in messages_of(refused))
    assert snapshot(flag, request_) == before
    client.post(url("reject", request_), {"reason": "no HARA update"}, HTTP_X_REQUEST_ID="req-reject")
    flag.refresh_from_db()
    request_.refresh_from_db()
    assert (flag.enabled, request_.status, request_.decision_comment) == (False, "rejected", "no HARA update")
    assert AuditEntry.objects.get(action="REJECT_CHANGE").request_id == "req-reject"


def test_reject__requester__refused(login: Any, request_: ChangeRequest, flag: Flag, writer: Any) -> None:
    client = login()
    client.force_login(writer)
    before = snapshot(flag, request_)
    client.post(url("reject", request_), {"reason": "changed my mind"})
    assert snapshot(flag, request_) == before


def test_withdraw__requester__withdrawn_other_user_refused(login: Any, request_: ChangeRequest, flag: Flag,
                                                           writer: Any) -> None:
    before = snapshot(flag, request_)
    refused = login("SAFETY").post(url("withdraw", request_))
    assert any("only the requester" in m for m in messages_of(refused))
    assert snapshot(flag, request_) == before
    client = login()
    client.force_login(writer)
    client.post(url("withdraw", request_))
    flag.refresh_from_db()
    request_.refresh_from_db()
    assert (request_.status, flag.enabled, flag.version) == ("withdrawn", False, 1)
    assert AuditEntry.objects.filter(action="WITHDRAW_CHANGE").count() == 1
