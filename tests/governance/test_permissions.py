"""Teams own flags (django-guardian): only the owning team's WRITE users and ADMIN change them.

Every check goes through the services, the one place changes are made.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from guardian.shortcuts import get_groups_with_perms

from core.actors import Actor
from core.errors import PermissionDenied
from flags import permissions, services
from flags.models import Flag, Rule
from tests.factories import RuleFactory, UserFactory, actor, api_key
from tests.governance.conftest import audit_trail, owned_flag, state, team

pytestmark = pytest.mark.django_db

WHITELIST = {"type": "vehicle_whitelist", "conditions": {"vins": ["KMHXX00XXXX000003"]}}


def member(role: str, name: str, *teams: str) -> Actor:
    user = UserFactory(username=name, role=role)
    for team_name in teams:
        team(team_name, user)
    return Actor.for_user(user)


@pytest.fixture
def chassis_flag() -> Flag:
    flag = owned_flag(team("chassis"), key="chassis.damping", enabled=False)
    RuleFactory(flag=flag, priority=5)
    return flag


@pytest.fixture
def chassis_asil_d() -> Flag:
    return owned_flag(team("chassis"), key="chassis.steer-by-wire", safety_level="ASIL_D", enabled=False)


OPERATIONS: dict[str, Callable[[Actor, Flag], Any]] = {
    "update": lambda who, flag: services.flag_update(actor=who, flag=flag, changes={"name": "Renamed"}),
    "enable": lambda who, flag: services.flag_set_enabled(actor=who, flag=flag, enabled=True),
    "archive": lambda who, flag: services.flag_archive(actor=who, flag=flag),
    "rule create": lambda who, flag: services.rule_create(actor=who, flag=flag, **WHITELIST),
    "rule update": lambda who, flag: services.rule_update(
        actor=who, flag=flag, rule_id=flag.rules.get().pk, priority=50),
    "rule delete": lambda who, flag: services.rule_delete(actor=who, flag=flag, rule_id=flag.rules.get().pk),
    "kill switch": lambda who, flag: services.kill_switch_engage(actor=who, flag=flag, reason="r"),
}


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_write_user_of_another_team__permission_denied_and_nothing_changed(
    chassis_flag: Flag, operation: str
) -> None:
    # Given a WRITE user who belongs to another team
    outsider = member("WRITE", "infotainment-dev", "infotainment")
    before, trail = state(chassis_flag), audit_trail()
    # When they try to change the chassis team's flag
    with pytest.raises(PermissionDenied):
        OPERATIONS[operation](outsider, chassis_flag)
    # Then nothing changed and nothing was audited
    assert state(chassis_flag) == before
    assert audit_trail() == trail


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_write_user_of_owning_team__allowed(chassis_flag: Flag, operation: str) -> None:
    insider = member("WRITE", "chassis-dev", "chassis")
    outcome = OPERATIONS[operation](insider, chassis_flag)
    chassis_flag.refresh_from_db()
    assert outcome.applied
    assert chassis_flag.version == 2
    assert audit_trail()[-1][1] != "REQUEST_CHANGE"


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_admin__allowed_on_any_team_flag(chassis_flag: Flag, operation: str) -> None:
    outcome = OPERATIONS[operation](member("ADMIN", "root-admin"), chassis_flag)
    chassis_flag.refresh_from_db()
    assert outcome.applied and chassis_flag.version == 2


def test_read_user__sees_every_flag_changes_none(chassis_flag: Flag) -> None:
    reader = member("READ", "auditor", "chassis")  # even inside the team
    assert permissions.can_view(reader)
    before = state(chassis_flag)
    with pytest.raises(PermissionDenied):
        services.flag_update(actor=reader, flag=chassis_flag, changes={"name": "x"})
    assert state(chassis_flag) == before


def test_asil_d_change_request__by_another_team__denied_no_request(chassis_asil_d: Flag) -> None:
    outsider = member("WRITE", "infotainment-dev", "infotainment")
    before, trail = state(chassis_asil_d), audit_trail()
    with pytest.raises(PermissionDenied):
        services.flag_set_enabled(actor=outsider, flag=chassis_asil_d, enabled=True, rationale="HARA-7")
    assert not chassis_asil_d.change_requests.exists()
    assert (state(chassis_asil_d), audit_trail()) == (before, trail)


def test_asil_d_change_request__by_owning_team__held_for_approval(chassis_asil_d: Flag) -> None:
    insider = member("WRITE", "chassis-dev", "chassis")
    outcome = services.flag_set_enabled(actor=insider, flag=chassis_asil_d, enabled=True, rationale="HARA-7")
    assert not outcome.applied
    assert outcome.change_request.requested_by == insider.user


def test_unbound_api_key__may_not_change_team_flags_admin_key_may(chassis_flag: Flag) -> None:
    with pytest.raises(PermissionDenied):
        services.flag_update(actor=Actor.for_api_key(api_key("key-1", "WRITE")), flag=chassis_flag,
                             changes={"name": "x"})
    assert services.flag_update(actor=Actor.for_api_key(api_key("key-2", "ADMIN")), flag=chassis_flag,
                                changes={"name": "x"}).applied


# -- ownership -------------------------------------------------------------------------------


def owners(flag: Flag) -> dict[str, list[str]]:
    return {group.name: sorted(perms) for group, perms in get_groups_with_perms(flag, attach_perms=True).items()}


def test_flag_create__with_own_team__owned_and_permission_assigned() -> None:
    insider = member("WRITE", "chassis-dev", "chassis")
    flag = services.flag_create(actor=insider, key="chassis.new", name="New", owner_team="chassis")
    assert flag.owner_team.name == "chassis"
    assert owners(flag) == {"chassis": ["change_flag"]}


@pytest.mark.parametrize(
    ("owner_team", "message"),
    [
        ("powertrain", "you can only give a flag to a team you belong to"),
        ("WRITE", "WRITE is a role, not a team"),
    ],
)
def test_flag_create__team_not_joined_or_a_role__refused(owner_team: str, message: str) -> None:
    team("powertrain")
    writer = member("WRITE", "chassis-dev", "chassis")
    with pytest.raises(ValidationError) as caught:
        services.flag_create(actor=writer, key="chassis.new", name="New", owner_team=owner_team)
    assert caught.value.message_dict == {"owner_team": [message]}
    assert not Flag.objects.filter(key="chassis.new").exists()
    assert audit_trail() == []


def test_owner_change__reassigns_permission_old_team_loses_it(chassis_flag: Flag) -> None:
    # Given the chassis team's flag, and a developer in each team
    chassis_dev = member("WRITE", "chassis-dev", "chassis")
    body_dev = member("WRITE", "body-dev", "body")
    # When ADMIN gives it to the body team
    services.flag_update(actor=member("ADMIN", "root-admin"), flag=chassis_flag, changes={"owner_team": "body"})
    # Then guardian's permission moved with it
    assert owners(chassis_flag) == {"body": ["change_flag"]}
    with pytest.raises(PermissionDenied):
        services.flag_update(actor=chassis_dev, flag=chassis_flag, changes={"name": "old team"})
    assert services.flag_update(actor=body_dev, flag=chassis_flag, changes={"name": "new team"}).applied
    assert Flag.objects.get(pk=chassis_flag.pk).name == "new team"


def test_owner_change__member_of_both_teams__allowed(chassis_flag: Flag) -> None:
    both = member("WRITE", "platform-dev", "chassis", "platform")
    assert services.flag_update(actor=both, flag=chassis_flag, changes={"owner_team": "platform"}).applied
    assert owners(chassis_flag) == {"platform": ["change_flag"]}


@pytest.mark.parametrize(
    ("new_owner", "message"),
    [
        ("body", "you can only give a flag to a team you belong to"),
        (None, "only ADMIN can take a flag away from its team"),
        ("READ", "READ is a role, not a team"),
    ],
)
def test_owner_change__by_write_user__limited_and_nothing_changed(
    chassis_flag: Flag, new_owner: str | None, message: str
) -> None:
    team("body")
    insider = member("WRITE", "chassis-dev", "chassis")
    before, trail = state(chassis_flag), audit_trail()
    with pytest.raises(ValidationError) as caught:
        services.flag_update(actor=insider, flag=chassis_flag, changes={"owner_team": new_owner})
    assert caught.value.message_dict == {"owner_team": [message]}
    assert (state(chassis_flag), audit_trail()) == (before, trail)


def test_owner_removed_by_admin__open_to_every_writer(chassis_flag: Flag) -> None:
    services.flag_update(actor=member("ADMIN", "root-admin"), flag=chassis_flag, changes={"owner_team": None})
    assert owners(chassis_flag) == {}
    anyone = member("WRITE", "any-dev")
    assert services.flag_update(actor=anyone, flag=chassis_flag, changes={"name": "open"}).applied


def test_asil_d_owner_change__permission_moves_only_on_approval(chassis_asil_d: Flag) -> None:
    both = member("WRITE", "platform-dev", "chassis", "platform")
    request = services.flag_update(actor=both, flag=chassis_asil_d, changes={"owner_team": "platform"},
                                   rationale="org change ORG-12").change_request
    assert owners(chassis_asil_d) == {"chassis": ["change_flag"]}  # the savepoint preview left no trace
    services.change_request_approve(actor=actor("SAFETY"), change_request=request)
    assert owners(chassis_asil_d) == {"platform": ["change_flag"]}
    assert Flag.objects.get(pk=chassis_asil_d.pk).owner_team.name == "platform"


def test_unowned_flag__any_writer(db: None) -> None:
    flag = owned_flag(None)
    assert services.flag_update(actor=member("WRITE", "w"), flag=flag, changes={"name": "x"}).applied
    assert not Rule.objects.exists()
