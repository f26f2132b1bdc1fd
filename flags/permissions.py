"""Who may do what to which flag. Roles are groups; teams own flags (django-guardian)."""

from __future__ import annotations

from typing import Any

from guardian.shortcuts import assign_perm, remove_perm

from core.actors import ROLE_ADMIN, ROLE_READ, ROLE_SAFETY, ROLE_WRITE, ROLES, Actor
from flags.models import Flag

CHANGE_FLAG = "flags.change_flag"


def can_view(actor: Actor) -> bool:
    return actor.has_role(ROLE_ADMIN, ROLE_WRITE, ROLE_READ, ROLE_SAFETY)


def can_create(actor: Actor) -> bool:
    return actor.has_role(ROLE_ADMIN, ROLE_WRITE)


def can_change(actor: Actor, flag: Flag) -> bool:
    """ADMIN: any flag. WRITE: unowned flags, and flags owned by one of the user's teams."""
    if actor.has_role(ROLE_ADMIN):
        return True
    if not actor.has_role(ROLE_WRITE):
        return False
    if flag.owner_team_id is None:
        return True
    user = actor.user
    return user is not None and bool(user.has_perm(CHANGE_FLAG, flag))


def can_engage_kill_switch(actor: Actor, flag: Flag) -> bool:
    # Toward the safe state: every engineer who may write or approve may pull it.
    return actor.has_role(ROLE_SAFETY) or can_change(actor, flag)


def can_approve(actor: Actor) -> bool:
    return actor.user is not None and actor.has_role(ROLE_SAFETY)


def owner_change_problem(actor: Actor, old_team: Any, new_team: Any) -> str | None:
    """Why ``actor`` may not make ``new_team`` the owner of a flag owned by ``old_team``.

    None when they may. Checked when the change is made or requested, never on approval
    (the SAFETY approver need not belong to the team).
    """
    if new_team is not None and new_team.name in ROLES:
        return f"{new_team.name} is a role, not a team"
    if actor.has_role(ROLE_ADMIN) or new_team == old_team:
        return None
    if new_team is None:
        # An unowned flag is open to every WRITE user: only ADMIN may widen it so.
        return "only ADMIN can take a flag away from its team"
    user = actor.user
    if user is None or not user.groups.filter(pk=new_team.pk).exists():
        return "you can only give a flag to a team you belong to"
    return None


def set_owner_permissions(flag: Flag, old_team: Any, new_team: Any) -> None:
    """Keep guardian's object permission in step with the owning team (nothing to do when it stays)."""
    if old_team == new_team:
        return
    if old_team is not None:
        remove_perm(CHANGE_FLAG, old_team, flag)
    if new_team is not None:
        assign_perm(CHANGE_FLAG, new_team, flag)
