"""The two-person rule's deciding side: who may reject, and who counts as the requester.

Each test here was written against a deliberate break of the rule it names (the break is in
the commit message) and fails on it; refusals also show that nothing changed.
"""

from __future__ import annotations

from typing import Any

import pytest

from accounts.services import api_key_create
from core.actors import Actor
from core.errors import PermissionDenied
from flags import services
from flags.models import ChangeRequest, Flag
from tests.factories import ApiKeyFactory, UserFactory, actor
from tests.governance.conftest import audit_trail, state

pytestmark = pytest.mark.django_db

R = "HARA-2026-017"




def decision(request: ChangeRequest) -> tuple[Any, ...]:
    request.refresh_from_db()
    return (request.status, request.decided_by_id, request.decided_by_label, request.decided_at,
            request.decision_comment)


UNDECIDED = ("pending", None, "", None, "")


@pytest.mark.parametrize("role", ["READ", "WRITE", "ADMIN", "ADMIN,WRITE"])
def test_change_request_reject__user_without_safety_role__permission_denied_and_nothing_changed(
    brakes: Flag, pending: ChangeRequest, role: str
) -> None:
    # Given a pending ASIL-D request and a second person who is not a SAFETY engineer
    other = actor(role, "not-safety")
    before, trail = state(brakes), audit_trail()
    # When they reject it
    with pytest.raises(PermissionDenied) as refused:
        services.change_request_reject(actor=other, change_request=pending, reason="looks wrong")
    # Then it is refused for the role, and the request, the flag and the audit are as they were
    assert str(refused.value) == "only SAFETY engineers decide change requests to ASIL-D flags"
    assert decision(pending) == UNDECIDED
    assert state(brakes) == before
    assert audit_trail() == trail


def test_change_request_reject__write_key_without_user__permission_denied_and_nothing_changed(
    brakes: Flag, pending: ChangeRequest
) -> None:
    # Given an unbound WRITE key (no person behind it, so no SAFETY role either)
    key, _ = api_key_create(actor=Actor.for_system("tests"), name="supplier-script", role="WRITE")
    before, trail = state(brakes), audit_trail()
    # When the key rejects the request
    with pytest.raises(PermissionDenied):
        services.change_request_reject(actor=Actor.for_api_key(key), change_request=pending, reason="no")
    # Then nothing changed
    assert decision(pending) == UNDECIDED
    assert state(brakes) == before
    assert audit_trail() == trail


def test_change_request_reject__safety_user__rejected_with_reason(brakes: Flag, pending: ChangeRequest) -> None:
    # Given a SAFETY engineer who did not make the request
    safety = actor("SAFETY", "safety-1")
    before = state(brakes)
    # When they reject it
    services.change_request_reject(actor=safety, change_request=pending, reason="HARA not updated")
    # Then it is rejected by them, with the reason, and the flag did not change
    status, decided_by, label, decided_at, comment = decision(pending)
    assert (status, decided_by, label, comment) == ("rejected", safety.user.pk, "safety-1", "HARA not updated")
    assert decided_at is not None
    assert state(brakes) == before
    assert [action for _, action, _ in audit_trail()] == ["REQUEST_CHANGE", "REJECT_CHANGE"]


# -- the requester through the key they made ---------------------------------------------------------


@pytest.fixture
def safety_request(brakes: Flag) -> tuple[Any, ChangeRequest]:
    """A request made in person by a SAFETY (and WRITE) engineer."""
    requester = UserFactory(username="safety-writer", role="SAFETY,WRITE")
    outcome = services.flag_set_enabled(actor=Actor.for_user(requester), flag=brakes, enabled=True, rationale=R)
    assert outcome.change_request is not None
    return requester, outcome.change_request


def test_is_requester__key_made_by_requester_for_a_colleague__true(safety_request: tuple[Any, ChangeRequest]) -> None:
    # Given a key bound to a colleague that the requester made (a row the services no longer
    # make, but the model holds)
    requester, request = safety_request
    colleague = UserFactory(username="safety-2", role="SAFETY")
    key = ApiKeyFactory(user=colleague, created_by=requester)
    # When the admin's buttons and the decision ask whether the key's actor is the requester
    answer = services.is_requester(Actor.for_api_key(key), request)
    # Then the key's creator counts: it is the requester
    assert answer is True


def test_change_request_approve__key_made_by_requester_for_a_colleague__permission_denied_and_nothing_changed(
    brakes: Flag, safety_request: tuple[Any, ChangeRequest]
) -> None:
    # Given a request and a SAFETY colleague's key that the requester made
    requester, request = safety_request
    colleague = UserFactory(username="safety-2", role="SAFETY")
    key = ApiKeyFactory(user=colleague, created_by=requester)
    before, trail = state(brakes), audit_trail()
    # When the key approves the request
    with pytest.raises(PermissionDenied) as refused:
        services.change_request_approve(actor=Actor.for_api_key(key), change_request=request)
    # Then the requester cannot approve through it: nothing applied, nothing audited
    assert str(refused.value) == "the requester cannot decide their own change request: a second person must"
    assert decision(request) == UNDECIDED
    assert state(brakes) == before
    assert audit_trail() == trail


def test_change_request_withdraw__unbound_key_made_by_requester__withdrawn(brakes: Flag) -> None:
    # Given an ADMIN's request made in person, and an unbound key the same ADMIN made
    admin = UserFactory(username="admin-1", role="ADMIN")
    request = services.flag_set_enabled(actor=Actor.for_user(admin), flag=brakes, enabled=True,
                                        rationale=R).change_request
    assert request is not None
    key, _ = api_key_create(actor=Actor.for_user(admin), name="admin-script", role="ADMIN")
    # When the key withdraws the request
    services.change_request_withdraw(actor=Actor.for_api_key(key), change_request=request)
    # Then it is withdrawn: the key's creator is the requester
    request.refresh_from_db()
    assert (request.status, request.decided_by_label) == ("withdrawn", "api-key:admin-script")
