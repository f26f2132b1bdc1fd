"""The management commands scripts and tests rely on: demo and create_user."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from audit.services import verify_chain
from flags.models import ChangeRequest, Flag, Rule
from vehicles.models import Vehicle

pytestmark = pytest.mark.django_db


def test_demo__run_twice__idempotent_and_covers_every_type_and_level() -> None:
    first, second = StringIO(), StringIO()
    call_command("demo", stdout=first)
    counts = (Flag.objects.count(), Rule.objects.count(), Vehicle.objects.count(), ChangeRequest.objects.count())
    call_command("demo", stdout=second)
    assert counts == (Flag.objects.count(), Rule.objects.count(), Vehicle.objects.count(),
                      ChangeRequest.objects.count())
    assert set(Flag.objects.values_list("type", flat=True)) == {"boolean", "string", "number", "json"}
    assert set(Flag.objects.values_list("safety_level", flat=True)) == {
        "NON_CRITICAL", "SAFETY_RELEVANT", "ASIL_B", "ASIL_D"}
    assert set(Rule.objects.values_list("type", flat=True)) == {
        "kill_switch", "vehicle_whitelist", "vehicle_target", "user_attribute", "percentage_rollout"}
    assert ChangeRequest.objects.filter(status="pending").count() == 1
    for name, role in (("admin", "ADMIN"), ("writer", "WRITE"), ("reader", "READ"), ("safety", "SAFETY")):
        assert f"{name}-demo-pass" in second.getvalue()
        assert get_user_model().objects.get(username=name).groups.filter(name=role).exists()
    assert verify_chain().ok


def test_create_user__new__staff_with_role_and_password() -> None:
    out = StringIO()
    call_command("create_user", "alice", "--role", "SAFETY", "--password", "s3cret-pass", stdout=out)
    user = get_user_model().objects.get(username="alice")
    assert (user.is_staff, user.check_password("s3cret-pass")) == (True, True)
    assert list(user.groups.values_list("name", flat=True)) == ["SAFETY"]
    assert "created user alice with role SAFETY" in out.getvalue()


def test_create_user__unknown_role__refused_nothing_created() -> None:
    with pytest.raises(CommandError):
        call_command("create_user", "bob", "--role", "ROOT")
    assert not get_user_model().objects.filter(username="bob").exists()
