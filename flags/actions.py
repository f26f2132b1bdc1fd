"""The audit actions of flags, rules and change requests, with the labels people read
(the evidence report, the admin). ``audit`` stores the value; it knows no domain."""

from __future__ import annotations

from django.db import models


class FlagAction(models.TextChoices):
    CREATE_FLAG = "CREATE_FLAG", "Flag created"
    UPDATE_FLAG = "UPDATE_FLAG", "Flag updated"
    ENABLE_FLAG = "ENABLE_FLAG", "Flag enabled"
    DISABLE_FLAG = "DISABLE_FLAG", "Flag disabled"
    ARCHIVE_FLAG = "ARCHIVE_FLAG", "Flag archived"
    DELETE_FLAG = "DELETE_FLAG", "Flag deleted"
    CREATE_RULE = "CREATE_RULE", "Rule created"
    UPDATE_RULE = "UPDATE_RULE", "Rule updated"
    DELETE_RULE = "DELETE_RULE", "Rule deleted"
    KILL_SWITCH = "KILL_SWITCH", "Kill switch engaged"
    LIFT_KILL_SWITCH = "LIFT_KILL_SWITCH", "Kill switch lifted"
    REQUEST_CHANGE = "REQUEST_CHANGE", "Change requested"
    APPROVE_CHANGE = "APPROVE_CHANGE", "Change request approved"
    REJECT_CHANGE = "REJECT_CHANGE", "Change request rejected"
    WITHDRAW_CHANGE = "WITHDRAW_CHANGE", "Change request withdrawn"


def label(action: str) -> str:
    """The label of a flag action; other apps' actions (keys, users) as words."""
    try:
        return str(FlagAction(action).label)
    except ValueError:
        return action.replace("_", " ").capitalize()
