"""No way around the ASIL-D two-person rule through the service layer.

Every operation on an ASIL-D flag becomes a change request and changes nothing; every
decision path that must be refused is refused, and a refusal changes nothing either:
not the flag row, not its rules, not the revisions, not the owners, and no audit entry
that records a change being applied.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from audit.models import AuditEntry
from core.actors import Actor
from core.errors import Conflict, PermissionDenied
from flags import services
from flags.models import ChangeRequest, Flag, Rule
from tests.factories import RuleFactory, UserFactory, actor, api_key
from tests.governance.conftest import applied_entries, audit_trail, owned_flag, requests_of, state, team

pytestmark = pytest.mark.django_db

R = "HARA-2026-017"


@pytest.fixture
def brakes() -> Flag:
    """An ASIL-D flag of the chassis team: enabled, one targeting rule, kill switch engaged."""
    flag = owned_flag(team("chassis"), key="brake.blend", safety_level="ASIL_D", enabled=True)
    RuleFactory(flag=flag, type="vehicle_whitelist", priority=5, conditions={"vins": ["KMHXX00XXXX000001"]})
    RuleFactory(flag=flag, type="kill_switch", priority=1000,
                conditions={"force_disabled": True, "reason": "recall 24V-001"})
    return flag


@pytest.fixture
def engineer() -> Actor:
    """A WRITE user of the chassis team, also in the platform team."""
    user = UserFactory(username="chassis-dev", role="WRITE")
    team("chassis", user)
    team("platform", user)
    return Actor.for_user(user)


def _rule(flag: Flag, kind: str) -> int:
    return Rule.objects.get(flag=flag, type=kind).pk


# (operation the request must carry, how the engineer asks for it)
EVERY_OPERATION: dict[str, tuple[str, Callable[[Actor, Flag], Any]]] = {
    "update fields": ("update_flag", lambda who, f: services.flag_update(
        actor=who, flag=f, changes={"name": "Brake blending v2", "ttl_seconds": 3600}, rationale=R)),
    "change default value": ("update_flag", lambda who, f: services.flag_update(
        actor=who, flag=f, changes={"default_value": True}, rationale=R)),
    "disable": ("disable_flag", lambda who, f: services.flag_set_enabled(
        actor=who, flag=f, enabled=False, rationale=R)),
    "enable": ("enable_flag", lambda who, f: services.flag_set_enabled(  # the test disables it first
        actor=who, flag=f, enabled=True, rationale=R)),
    "archive": ("archive_flag", lambda who, f: services.flag_archive(actor=who, flag=f, rationale=R)),
    "rule create": ("create_rule", lambda who, f: services.rule_create(
        actor=who, flag=f, type="percentage_rollout", conditions={"rollout_percentage": 10}, rationale=R)),
    "rule update": ("update_rule", lambda who, f: services.rule_update(
        actor=who, flag=f, rule_id=_rule(f, "vehicle_whitelist"), priority=6, rationale=R)),
    "rule delete": ("delete_rule", lambda who, f: services.rule_delete(
        actor=who, flag=f, rule_id=_rule(f, "vehicle_whitelist"), rationale=R)),
    "kill switch lift": ("lift_kill_switch", lambda who, f: services.kill_switch_lift(
        actor=who, flag=f, rationale=R)),
    "kill switch rule disabled": ("update_rule", lambda who, f: services.rule_update(
        actor=who, flag=f, rule_id=_rule(f, "kill_switch"), enabled=False, rationale=R)),
    "kill switch rule deleted": ("delete_rule", lambda who, f: services.rule_delete(
        actor=who, flag=f, rule_id=_rule(f, "kill_switch"), rationale=R)),
    "lower safety level": ("update_flag", lambda who, f: services.flag_update(
        actor=who, flag=f, changes={"safety_level": "NON_CRITICAL"}, rationale=R)),
    "change owner team": ("update_flag", lambda who, f: services.flag_update(
        actor=who, flag=f, changes={"owner_team": "platform"}, rationale=R)),
    "move environment": ("update_flag", lambda who, f: services.flag_update(
        actor=who, flag=f, changes={"environment": "staging"}, rationale=R)),
}


@pytest.mark.parametrize("name", list(EVERY_OPERATION))
def test_every_operation_on_asil_d__held_as_change_request_nothing_changed(
    brakes: Flag, engineer: Actor, name: str
) -> None:
    operation, ask = EVERY_OPERATION[name]
    if name == "enable":
        Flag.objects.filter(pk=brakes.pk).update(enabled=False)
    # Given everything the change could touch, and the audit trail so far
    before, trail = state(brakes), audit_trail()
    # When the engineer calls the service directly
    outcome = ask(engineer, brakes)
    # Then a change request holds it ...
    assert not outcome.applied
    request = outcome.change_request
    assert (request.operation, request.status, request.base_version, request.rationale) == (
        operation, "pending", before["flag"]["version"], R)
    assert request.before != request.after
    # ... nothing changed: flag row, version, rules, revisions, owners ...
    assert state(brakes) == before
    # ... and the only new audit entry is the request itself
    assert audit_trail() == [*trail, (len(trail) + 1, "REQUEST_CHANGE", request.pk)]


@pytest.fixture
def pending(brakes: Flag, engineer: Actor) -> ChangeRequest:
    return services.flag_update(actor=engineer, flag=brakes, changes={"name": "Blend v2"}, rationale=R).change_request


def refused_and_nothing_changed(flag: Flag, attempt: Callable[[], Any], error: type[Exception]) -> Exception:
    before, trail, requests = state(flag), audit_trail(), requests_of(flag)
    with pytest.raises(error) as caught:
        attempt()
    assert state(flag) == before
    assert audit_trail() == trail  # no APPLY entry, no entry at all
    assert requests_of(flag) == requests
    return caught.value


def test_requester_approves_through_api_key_bound_to_self__refused(
    brakes: Flag, pending: ChangeRequest, engineer: Actor
) -> None:
    # Given the requester also holds SAFETY, and a script key bound to their own user
    engineer.user.groups.add(team("SAFETY"))

    script_key = api_key("ci-pipeline", "WRITE", user=engineer.user)

    through_key = Actor.for_api_key(script_key, ip="10.0.0.9", request_id="req-key")
    assert through_key.has_role("SAFETY") and through_key.api_key is not None
    # When that key approves the request
    error = refused_and_nothing_changed(
        brakes, lambda: services.change_request_approve(actor=through_key, change_request=pending), PermissionDenied
    )
    # Then it is the same person: refused
    assert "second person" in str(error)


def test_request_made_through_key__approved_by_the_key_owner_session__refused(brakes: Flag) -> None:
    owner = UserFactory(username="dual-role", role="WRITE,SAFETY")
    team("chassis", owner)

    script_key = api_key("nightly", "WRITE", user=owner)

    request = services.flag_update(actor=Actor.for_api_key(script_key), flag=brakes, changes={"name": "via key"},
                                   rationale=R).change_request
    assert (request.requested_by_id, request.requested_by_api_key_id) == (owner.pk, script_key.pk)
    refused_and_nothing_changed(
        brakes, lambda: services.change_request_approve(actor=Actor.for_user(owner), change_request=request),
        PermissionDenied,
    )


def test_two_requests_same_version__second_approval_conflicts(brakes: Flag, engineer: Actor) -> None:
    # Given two requests made against the same version
    first = services.flag_update(actor=engineer, flag=brakes, changes={"name": "A"}, rationale=R).change_request
    second = services.flag_update(actor=engineer, flag=brakes, changes={"ttl_seconds": 600},
                                  rationale=R).change_request
    assert first.base_version == second.base_version
    safety = actor("SAFETY")
    # When both are approved, one after the other
    services.change_request_approve(actor=safety, change_request=first)
    error = refused_and_nothing_changed(
        brakes, lambda: services.change_request_approve(actor=safety, change_request=second), Conflict
    )
    # Then the second conflicts: it was reviewed against a flag that no longer exists
    assert error.code == "stale"
    brakes.refresh_from_db()
    assert (brakes.name, brakes.ttl_seconds) == ("A", 604800)
    assert ChangeRequest.objects.get(pk=second.pk).status == "pending"


def test_approve_twice__already_decided(brakes: Flag, pending: ChangeRequest) -> None:
    services.change_request_approve(actor=actor("SAFETY"), change_request=pending)
    applied = applied_entries()
    error = refused_and_nothing_changed(
        brakes,
        lambda: services.change_request_approve(actor=actor("SAFETY", "safety-b"), change_request=pending),
        Conflict,
    )
    assert error.code == "already_decided"
    assert applied_entries() == applied


def test_rejected_request__cannot_be_approved_later(brakes: Flag, pending: ChangeRequest) -> None:
    services.change_request_reject(actor=actor("SAFETY"), change_request=pending, reason="no HARA update")
    error = refused_and_nothing_changed(
        brakes,
        lambda: services.change_request_approve(actor=actor("SAFETY", "safety-b"), change_request=pending),
        Conflict,
    )
    assert error.code == "already_decided"
    assert ChangeRequest.objects.get(pk=pending.pk).status == "rejected"
    assert [action for _, action in applied_entries()] == []


@pytest.mark.parametrize("who", ["another WRITE user", "a SAFETY user", "an ADMIN"])
def test_withdraw_by_someone_else__refused(brakes: Flag, pending: ChangeRequest, who: str) -> None:
    role = {"another WRITE user": "WRITE", "a SAFETY user": "SAFETY", "an ADMIN": "ADMIN"}[who]
    refused_and_nothing_changed(
        brakes, lambda: services.change_request_withdraw(actor=actor(role, "someone-else"), change_request=pending),
        PermissionDenied,
    )
    assert ChangeRequest.objects.get(pk=pending.pk).status == "pending"


def test_withdrawn_request__cannot_be_approved(brakes: Flag, pending: ChangeRequest, engineer: Actor) -> None:
    services.change_request_withdraw(actor=engineer, change_request=pending)
    error = refused_and_nothing_changed(
        brakes, lambda: services.change_request_approve(actor=actor("SAFETY"), change_request=pending), Conflict
    )
    assert error.code == "already_decided"


def test_request_by_unbound_key__nobody_can_approve_as_that_key(brakes: Flag) -> None:
    role_key = api_key("supplier", "ADMIN")

    request = services.flag_update(actor=Actor.for_api_key(role_key), flag=brakes, changes={"name": "k"},
                                   rationale=R).change_request
    # A key cannot approve (approval needs a person), and the same key bound to a SAFETY user is the requester.
    refused_and_nothing_changed(
        brakes, lambda: services.change_request_approve(actor=Actor.for_api_key(role_key), change_request=request),
        PermissionDenied,
    )


def test_request_through_own_unbound_key__its_creator_cannot_approve(brakes: Flag) -> None:
    # Given an ADMIN+SAFETY engineer who made an unbound ADMIN key for a script
    from accounts.models import ApiKey

    person = UserFactory(username="admin-safety", role="ADMIN,SAFETY")
    key = ApiKey.objects.create(name="my script", key_prefix="selfkey1", key_hash="0" * 64, role="ADMIN",
                                created_by=person)
    # When the script requests a change and the engineer approves it in person
    request = services.flag_update(actor=Actor.for_api_key(key), flag=brakes, changes={"name": "via script"},
                                   rationale=R).change_request
    # Then it is refused: the key's creator is the requester, so no second person looked at it
    error = refused_and_nothing_changed(
        brakes, lambda: services.change_request_approve(actor=Actor.for_user(person), change_request=request),
        PermissionDenied,
    )
    assert "requester" in error.message
    # while another SAFETY engineer may
    services.change_request_approve(actor=actor("SAFETY"), change_request=request)
    brakes.refresh_from_db()
    assert brakes.name == "via script"


@pytest.mark.usefixtures("committed_db_postgres")
def test_concurrent_approvals_of_two_requests__exactly_one_applies() -> None:
    # Given two requests against the same version, committed, and two SAFETY engineers
    flag = owned_flag(team("chassis"), key="brake.concurrent", safety_level="ASIL_D", enabled=True)
    writer = Actor.for_user(UserFactory(username="chassis-dev", role="WRITE"))
    team("chassis", writer.user)
    requests = [
        services.flag_update(actor=writer, flag=flag, changes={"name": name}, rationale=R).change_request
        for name in ("A", "B")
    ]
    approvers = [actor("SAFETY", "safety-a"), actor("SAFETY", "safety-b")]
    start = threading.Barrier(2)
    results: list[Any] = [None, None]

    def approve(index: int) -> None:
        try:
            start.wait(timeout=10)
            services.change_request_approve(actor=approvers[index], change_request=requests[index].pk)
            results[index] = "applied"
        except Exception as exc:  # noqa: BLE001 - recorded and asserted below
            results[index] = exc
        finally:
            connection.close()

    # When both approve at the same moment
    threads = [threading.Thread(target=approve, args=(index,)) for index in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    # Then exactly one applies; the other sees the new version and conflicts
    assert sorted(map(type, results), key=str) == sorted([str, Conflict], key=str), results
    loser = next(result for result in results if isinstance(result, Conflict))
    assert loser.code == "stale"
    flag.refresh_from_db()
    winner = results.index("applied")
    assert (flag.version, flag.name) == (2, "AB"[winner])
    assert AuditEntry.objects.filter(action="APPROVE_CHANGE").count() == 1
    assert [r.status for r in ChangeRequest.objects.order_by("id")] == [
        "approved" if index == winner else "pending" for index in (0, 1)
    ]
