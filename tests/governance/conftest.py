"""Arranging owned flags and comparing everything a change could touch, before and after."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group
from guardian.shortcuts import get_groups_with_perms

from audit.models import AuditEntry
from flags import permissions
from flags.models import ChangeRequest, Flag, Revision, Rule
from tests.factories import FlagFactory

# Audit actions that record a change being made (as opposed to requested or decided).
NOT_APPLYING = {"REQUEST_CHANGE", "REJECT_CHANGE", "WITHDRAW_CHANGE"}


def team(name: str, *users: Any) -> Group:
    group, _ = Group.objects.get_or_create(name=name)
    for user in users:
        user.groups.add(group)
    return group


def owned_flag(owner: Group | None, **fields: Any) -> Flag:
    """A flag owned by ``owner`` with guardian's permission as the services would set it."""
    flag = FlagFactory(owner_team=owner, **fields)
    permissions.set_owner_permissions(flag, None, owner)
    return flag


def state(flag: Flag) -> dict[str, Any]:
    """Everything a change to ``flag`` could touch."""
    return {
        "flag": Flag.objects.filter(pk=flag.pk).values().get(),
        "rules": list(Rule.objects.filter(flag_id=flag.pk).order_by("id").values()),
        "revisions": dict(Revision.objects.values_list("environment", "value")),
        "owners": {group.name: sorted(perms) for group, perms in get_groups_with_perms(flag, attach_perms=True).items()},
    }


def audit_trail() -> list[tuple[int, str, int | None]]:
    return list(AuditEntry.objects.order_by("seq").values_list("seq", "action", "change_request_id"))


def applied_entries() -> list[tuple[int, str]]:
    return [(seq, action) for seq, action, _ in audit_trail() if action not in NOT_APPLYING]


def requests_of(flag: Flag) -> list[tuple[int, str, str]]:
    return list(ChangeRequest.objects.filter(flag=flag).order_by("id").values_list("id", "operation", "status"))


@pytest.fixture
def committed_db_postgres(require_postgres: None, committed_db: None) -> None:
    """Committed transactions (threads see each other's work), PostgreSQL only."""


HARA = "HARA-2026-017"


@pytest.fixture
def brakes() -> Flag:
    """An ASIL-D flag, created disabled."""
    return FlagFactory(key="brake.blend", safety_level="ASIL_D", enabled=False)


@pytest.fixture
def pending(brakes: Flag) -> ChangeRequest:
    """A WRITE engineer's request to enable the ASIL-D flag, waiting for a SAFETY decision."""
    from flags import services
    from tests.factories import actor

    outcome = services.flag_set_enabled(actor=actor("WRITE", "requester"), flag=brakes, enabled=True,
                                        rationale=HARA)
    assert outcome.change_request is not None
    return outcome.change_request
