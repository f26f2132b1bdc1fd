"""Who holds SAFETY, WRITE, ADMIN, superuser, staff and active is what the two-person rule rests
on: every change of it is audited, with the user's state before and after, whether it comes from
``create_user``, the admin's User page or its Group page — and paths that could not be audited
are closed."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import Client

from accounts import keys
from accounts.actions import AccountAction
from accounts.services import api_key_create, group_set_members, user_set_groups, user_update
from audit.models import AuditEntry
from audit.services import verify_chain
from core.actors import Actor
from core.errors import PermissionDenied
from tests.admin.conftest import change_form_data
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

User = get_user_model()


def user_entries(user: Any = None) -> list[tuple[str, str, Any, Any]]:
    """(action, actor, groups before, groups after) of the user entries, oldest first."""
    entries = AuditEntry.objects.filter(object_type="user").order_by("seq")
    if user is not None:
        entries = entries.filter(object_id=str(user.pk))
    return [(e.action, e.actor, (e.before or {}).get("groups"), e.after["groups"]) for e in entries]


def groups_of(username: str) -> list[str]:
    return sorted(User.objects.get(username=username).groups.values_list("name", flat=True))


@pytest.fixture
def admin_client() -> Client:
    client = Client()
    client.force_login(UserFactory(username="root", role="ADMIN"))
    return client


# -- create_user ---------------------------------------------------------------------------------


def test_create_user_command__new_user__create_and_role_audited() -> None:
    # When the operator creates a SAFETY user from the command line
    call_command("create_user", "alice", "--role", "SAFETY", stdout=StringIO())
    # Then the user exists with the role, and two entries record it as the command
    alice = User.objects.get(username="alice")
    assert (groups_of("alice"), alice.is_staff, alice.has_usable_password()) == (["SAFETY"], True, False)
    assert user_entries(alice) == [
        ("CREATE_USER", "system:manage.py create_user", None, []),
        ("ADD_ROLE", "system:manage.py create_user", [], ["SAFETY"]),
    ]
    created = AuditEntry.objects.get(action="CREATE_USER")
    assert created.after == {"username": "alice", "email": "", "first_name": "", "last_name": "",
                             "is_active": True, "is_staff": True, "is_superuser": False, "groups": []}
    assert "password" not in str(created.after)


def test_create_user_command__existing_user_new_role__add_role_only() -> None:
    # Given a WRITE user without admin access
    bob = UserFactory(username="bob", role="WRITE", is_staff=False)
    # When the command gives them ADMIN
    call_command("create_user", "bob", "--role", "ADMIN", stdout=StringIO())
    # Then staff and the role are granted, each audited
    assert groups_of("bob") == ["ADMIN", "WRITE"]
    assert [(a, before, after) for a, _, before, after in user_entries(bob)] == [
        ("GRANT_STAFF", ["WRITE"], ["WRITE"]),
        ("ADD_ROLE", ["WRITE"], ["ADMIN", "WRITE"]),
    ]
    staff = AuditEntry.objects.get(action="GRANT_STAFF")
    assert (staff.before["is_staff"], staff.after["is_staff"]) == (False, True)


def test_create_user_command__role_held_already__nothing_audited() -> None:
    UserFactory(username="carol", role="SAFETY")
    call_command("create_user", "carol", "--role", "SAFETY", stdout=StringIO())
    assert user_entries() == []


# -- the admin's User page -----------------------------------------------------------------------


def user_form(client: Client, user: Any) -> dict[str, Any]:
    response = client.get(f"/admin/auth/user/{user.pk}/change/")
    assert response.status_code == 200
    return change_form_data(response)


def test_admin_user_page__add_safety_group__add_role_audited(admin_client: Client) -> None:
    # Given a WRITE user
    dave = UserFactory(username="dave", role="WRITE")
    data = user_form(admin_client, dave)
    # When an ADMIN adds the SAFETY group on the user's page
    data["groups"] = [*data["groups"], Group.objects.get(name="SAFETY").pk]
    response = admin_client.post(f"/admin/auth/user/{dave.pk}/change/", data)
    # Then the user is SAFETY, and one entry records it as the ADMIN, before and after
    assert response.status_code == 302
    assert groups_of("dave") == ["SAFETY", "WRITE"]
    assert user_entries(dave) == [("ADD_ROLE", "root", ["WRITE"], ["SAFETY", "WRITE"])]


def test_admin_user_page__remove_role_and_team__both_audited(admin_client: Client) -> None:
    erin = UserFactory(username="erin", role="SAFETY")
    erin.groups.add(Group.objects.create(name="chassis"))
    data = user_form(admin_client, erin)
    data["groups"] = []
    admin_client.post(f"/admin/auth/user/{erin.pk}/change/", data)
    assert groups_of("erin") == []
    assert user_entries(erin) == [
        ("REMOVE_ROLE", "root", ["SAFETY", "chassis"], ["chassis"]),
        ("REMOVE_FROM_GROUP", "root", ["chassis"], []),
    ]


def test_admin_user_page__deactivate__audited_and_key_refused(admin_client: Client) -> None:
    # Given a SAFETY engineer whose key works (and is cached)
    frank = UserFactory(username="frank", role="SAFETY")
    _, raw = api_key_create(actor=Actor.for_user(frank), name="frank-script", user=frank)
    assert admin_client.get("/api/v1/flags/", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200
    data = user_form(admin_client, frank)
    data.pop("is_active")
    # When an ADMIN unticks "active" (the admin saves in a transaction; its on-commit work runs)
    from django.test import TestCase

    with TestCase.captureOnCommitCallbacks(execute=True):
        response = admin_client.post(f"/admin/auth/user/{frank.pk}/change/", data)
    # Then the user is inactive, it is audited, and their key is refused at once
    assert response.status_code == 302
    assert User.objects.get(pk=frank.pk).is_active is False
    entry = AuditEntry.objects.get(action="DEACTIVATE_USER")
    assert (entry.actor, entry.before["is_active"], entry.after["is_active"]) == ("root", True, False)
    refused = Client().get("/api/v1/flags/", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert (refused.status_code, refused.json()["error"]["code"]) == (401, "api_key_inactive")


def test_admin_user_page__staff_and_details__audited_per_kind(admin_client: Client) -> None:
    gina = UserFactory(username="gina", role="READ", is_staff=False)
    data = user_form(admin_client, gina)
    data.update(is_staff="on", email="gina@example.com")
    admin_client.post(f"/admin/auth/user/{gina.pk}/change/", data)
    entries = AuditEntry.objects.filter(object_id=str(gina.pk)).order_by("seq")
    assert [(e.action, e.before["email"], e.after["email"], e.after["is_staff"]) for e in entries] == [
        ("UPDATE_USER", "", "gina@example.com", False),
        ("GRANT_STAFF", "gina@example.com", "gina@example.com", True),
    ]


def test_admin_user_page__admin_not_superuser__superuser_box_read_only(admin_client: Client) -> None:
    # Given an ADMIN (not a superuser) on another user's page
    hank = UserFactory(username="hank", role="READ")
    data = user_form(admin_client, hank)
    assert "is_superuser" not in data
    # When the POST claims is_superuser anyway
    data["is_superuser"] = "on"
    admin_client.post(f"/admin/auth/user/{hank.pk}/change/", data)
    # Then it is ignored: not a superuser, nothing audited
    assert User.objects.get(pk=hank.pk).is_superuser is False
    assert user_entries(hank) == []


def test_admin_user_page__superuser_grants_superuser__audited() -> None:
    client = Client()
    client.force_login(UserFactory(username="su", is_superuser=True))
    ivy = UserFactory(username="ivy", role="ADMIN")
    data = user_form(client, ivy)
    data["is_superuser"] = "on"
    client.post(f"/admin/auth/user/{ivy.pk}/change/", data)
    entry = AuditEntry.objects.get(action="GRANT_SUPERUSER")
    assert (entry.actor, entry.object_id, entry.before["is_superuser"], entry.after["is_superuser"]) == (
        "su", str(ivy.pk), False, True)


def test_admin_user_page__add_user__create_audited(admin_client: Client) -> None:
    response = admin_client.post("/admin/auth/user/add/", {"username": "jane", "usable_password": "true",
                                                           "password1": "a-long-pass-1", "password2": "a-long-pass-1"})
    jane = User.objects.get(username="jane")
    assert response.status_code == 302
    assert response["Location"] == f"/admin/auth/user/{jane.pk}/change/"
    assert jane.check_password("a-long-pass-1")
    assert user_entries(jane) == [("CREATE_USER", "root", None, [])]


def test_admin_user_page__delete__refused_user_kept(admin_client: Client) -> None:
    kim = UserFactory(username="kim", role="SAFETY")
    assert admin_client.post(f"/admin/auth/user/{kim.pk}/delete/", {"post": "yes"}).status_code == 403
    assert User.objects.filter(pk=kim.pk).exists()
    assert user_entries() == []


def test_admin_user_page__direct_permissions__not_editable(admin_client: Client) -> None:
    leo = UserFactory(username="leo", role="READ")
    assert "user_permissions" not in user_form(admin_client, leo)


def test_admin_user_page__write_user__no_access() -> None:
    client = Client()
    client.force_login(UserFactory(username="writer", role="WRITE"))
    target = UserFactory(username="mia", role="READ")
    assert client.get(f"/admin/auth/user/{target.pk}/change/").status_code == 403


# -- the admin's Group page ----------------------------------------------------------------------


def group_form(client: Client, group: Group) -> dict[str, Any]:
    response = client.get(f"/admin/auth/group/{group.pk}/change/")
    assert response.status_code == 200
    return change_form_data(response)


def test_admin_group_page__add_member_to_safety__add_role_audited_for_that_user(admin_client: Client) -> None:
    # Given the SAFETY group with one member, and a WRITE user
    safety = Group.objects.get(name="SAFETY")
    nora = UserFactory(username="nora", role="SAFETY")
    omar = UserFactory(username="omar", role="WRITE")
    data = group_form(admin_client, safety)
    assert data["members"] == [nora.pk]
    assert "name" not in data and "permissions" not in data  # a role: defined in accounts.roles
    # When an ADMIN adds the WRITE user to SAFETY on the group's page
    data["members"] = [nora.pk, omar.pk]
    response = admin_client.post(f"/admin/auth/group/{safety.pk}/change/", data)
    # Then the user is SAFETY, audited on the user exactly as from the User page; nora untouched
    assert response.status_code == 302
    assert groups_of("omar") == ["SAFETY", "WRITE"]
    assert user_entries(omar) == [("ADD_ROLE", "root", ["WRITE"], ["SAFETY", "WRITE"])]
    assert user_entries(nora) == []


def test_admin_group_page__remove_member__remove_role_audited(admin_client: Client) -> None:
    safety = Group.objects.get(name="SAFETY")
    pia = UserFactory(username="pia", role="SAFETY")
    data = group_form(admin_client, safety)
    data["members"] = []
    admin_client.post(f"/admin/auth/group/{safety.pk}/change/", data)
    assert groups_of("pia") == []
    assert user_entries(pia) == [("REMOVE_ROLE", "root", ["SAFETY"], [])]


def test_admin_group_page__role_group_rename_posted__ignored(admin_client: Client) -> None:
    safety = Group.objects.get(name="SAFETY")
    data = group_form(admin_client, safety)
    data["name"] = "SAFETY-old"
    admin_client.post(f"/admin/auth/group/{safety.pk}/change/", data)
    assert Group.objects.get(pk=safety.pk).name == "SAFETY"
    assert not AuditEntry.objects.exists()


def test_admin_group_page__new_team_with_member__created_and_membership_audited(admin_client: Client) -> None:
    quinn = UserFactory(username="quinn", role="WRITE")
    response = admin_client.post("/admin/auth/group/add/", {"name": "chassis", "members": [quinn.pk]})
    assert response.status_code == 302
    team = Group.objects.get(name="chassis")
    created = AuditEntry.objects.get(action="CREATE_GROUP")
    assert (created.actor, created.object_type, created.object_id, created.after) == (
        "root", "group", str(team.pk), {"name": "chassis", "role": False, "permissions": []})
    assert user_entries(quinn) == [("ADD_TO_GROUP", "root", ["WRITE"], ["WRITE", "chassis"])]


def test_admin_group_page__delete__refused(admin_client: Client) -> None:
    team = Group.objects.create(name="chassis")
    assert admin_client.post(f"/admin/auth/group/{team.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Group.objects.filter(pk=team.pk).exists()


# -- the services --------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["WRITE", "SAFETY", "READ"])
def test_user_set_groups__not_admin__refused_nothing_changed(who: str) -> None:
    # Given someone who is not ADMIN, and a READ user
    attempt = Actor.for_user(UserFactory(username="someone", role=who))
    target = UserFactory(username="target", role="READ")
    safety = Group.objects.get(name="SAFETY")
    # When they try to make the user SAFETY (or superuser, or inactive), from either side
    for change in (
        lambda: user_set_groups(actor=attempt, user=target, groups=[safety]),
        lambda: group_set_members(actor=attempt, group=safety, users=[target]),
        lambda: user_update(actor=attempt, user=target, changes={"is_active": False}),
    ):
        with pytest.raises(PermissionDenied):
            change()
    # Then nothing changed and nothing was audited
    assert groups_of("target") == ["READ"]
    assert User.objects.get(pk=target.pk).is_active is True
    assert not AuditEntry.objects.exists()


def test_user_update__admin_not_superuser_grants_superuser__refused_nothing_changed() -> None:
    admin = Actor.for_user(UserFactory(username="root", role="ADMIN"))
    target = UserFactory(username="target", role="READ")
    with pytest.raises(PermissionDenied):
        user_update(actor=admin, user=target, changes={"is_superuser": True, "email": "x@example.com"})
    assert User.objects.filter(pk=target.pk).values_list("is_superuser", "email").get() == (False, "")
    assert not AuditEntry.objects.exists()


def test_role_change__bound_key__cached_roles_follow_on_commit(on_commit: Any) -> None:
    # Given a SAFETY engineer's key, looked up (so its roles are cached)
    sam = UserFactory(username="sam", role="SAFETY")
    _, raw = api_key_create(actor=Actor.for_user(sam), name="sam-script", user=sam)
    assert keys.lookup(raw).roles == frozenset({"SAFETY"})  # type: ignore[union-attr]
    # When SAFETY is taken away
    with on_commit():
        user_set_groups(actor=Actor.for_system("tests"), user=sam, groups=[])
    # Then the key's cached roles are the new ones
    assert keys.lookup(raw).roles == frozenset()  # type: ignore[union-attr]


def test_role_entries__audit_chain__verifies() -> None:
    call_command("create_user", "tara", "--role", "SAFETY", stdout=StringIO())
    user_update(actor=Actor.for_system("tests"), user=User.objects.get(username="tara"),
                changes={"is_active": False})
    assert verify_chain().ok
    assert set(AuditEntry.objects.values_list("action", flat=True)) == {
        AccountAction.CREATE_USER, AccountAction.ADD_ROLE, AccountAction.DEACTIVATE_USER}
    assert AccountAction.ADD_ROLE.label == "Role granted"
