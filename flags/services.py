"""The public doors for every change to flags, rules, kill switches and change requests.

Admin, API, commands and code all call these functions; nothing else writes flags, rules
or change requests. Each change has one shape (``_execute``): lock the flag, check who may
do it, then either apply it (``flags.operations``: version and revision bumped, audit in
the same transaction, snapshot published after commit) or, for an ASIL-D flag, hold it as
a change request that a second person (SAFETY) must approve (``flags.governance``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from accounts.services import actor_check_current
from audit import services as audit
from core.actors import Actor
from core.errors import Conflict, PermissionDenied
from flags import broadcasts, permissions, selectors
from flags import operations as ops
from flags.actions import FlagAction
from flags.codes import FlagCode
from flags.governance import (
    change_request_approve,
    change_request_reject,
    change_request_withdraw,
    is_requester,
    propose,
)
from flags.models import Flag, KillSwitchAck, KillSwitchEvent, SafetyLevel
from flags.operations import (
    EDITABLE_FIELDS,
    IMMUTABLE_FIELDS,
    RULE_FIELDS,
    Op,
    Outcome,
    StepsRefused,
    flag_fields,
    flag_state,
    needs_approval,
)
from vehicles.models import Vehicle

log = logging.getLogger("fleetflag.push")

__all__ = [
    "EDITABLE_FIELDS", "IMMUTABLE_FIELDS", "RULE_FIELDS", "Outcome", "Step", "StepsRefused",
    "change_request_approve", "change_request_reject", "change_request_withdraw", "flag_archive", "flag_change",
    "flag_create", "flag_fields", "flag_set_enabled", "flag_state", "flag_update", "is_requester",
    "kill_switch_acks_record", "kill_switch_engage", "kill_switch_lift", "kill_switch_sent_record", "needs_approval", "rule_create", "rule_create_step", "rule_delete",
    "rule_delete_step", "rule_update", "rule_update_step", "update_step",
]


def _execute(
    *,
    actor: Actor,
    flag: Flag | int | str,
    operation: str,
    payload: dict[str, Any],
    rationale: str = "",
    expected_version: int | None = None,
) -> Outcome:
    with transaction.atomic():
        locked = ops.lock(flag)
        if expected_version is not None and locked.version != expected_version:
            # The caller decided on what it saw at that version; someone changed the flag since.
            raise Conflict(
                f"flag {locked.key} changed since it was loaded (version {expected_version} -> {locked.version})",
                code=FlagCode.STALE,
            )
        if not permissions.can_change(actor, locked):
            raise PermissionDenied(f"{actor.label} may not change flag {locked.key}")
        actor_check_current(actor=actor)  # a key revoked (or a user deactivated) since the actor was made
        if locked.archived_at is not None:
            raise Conflict(f"flag {locked.key} is archived; archived flags do not change", code=FlagCode.ARCHIVED)
        ops.check_owner_change(actor, locked, operation, payload)
        if not needs_approval(locked):
            applied, effects = ops.apply(locked, operation, payload, actor)
            return Outcome(applied, rule=ops.rule_of(effects), audit_actions=[e.action for e in effects])
        return propose(locked, operation, payload, actor, rationale)


# -- flags ---------------------------------------------------------------------------


def flag_create(
    *,
    actor: Actor,
    key: str,
    name: str,
    type: str = "boolean",
    default_value: Any = None,
    description: str = "",
    enabled: bool = False,
    safety_level: str = SafetyLevel.NON_CRITICAL,
    environment: str = "production",
    ttl_seconds: int = 604800,
    owner_team: Any = None,
) -> Flag:
    if not permissions.can_create(actor):
        raise PermissionDenied(f"{actor.label} may not create flags")
    if default_value is None and type == "boolean":
        default_value = False
    if safety_level == SafetyLevel.ASIL_D and enabled:
        raise ValidationError({"enabled": "ASIL-D flags are created disabled; enabling one needs a SAFETY approval"})
    team = ops.resolve_team(owner_team)
    problem = permissions.owner_change_problem(actor, None, team)
    if problem:
        raise ValidationError({"owner_team": problem})
    flag = Flag(
        key=key,
        name=name,
        type=type,
        default_value=default_value,
        description=description,
        enabled=enabled,
        safety_level=safety_level,
        environment=environment,
        ttl_seconds=ttl_seconds,
        owner_team=team,
        created_by=actor.user,
        updated_by=actor.user,
    )
    ops.full_clean(flag)
    with transaction.atomic():
        actor_check_current(actor=actor)
        if Flag.objects.filter(key=key).exists():
            raise ValidationError({"key": f"a flag with key {key!r} exists already (keys are never reused)"})
        try:
            with transaction.atomic():
                flag.save()
        except IntegrityError as exc:
            raise ValidationError({"key": f"a flag with key {key!r} exists already"}) from exc
        permissions.set_owner_permissions(flag, None, team)
        ops.bump_revisions(environment)
        audit.record(actor=actor, action=FlagAction.CREATE_FLAG, flag=flag, object_type="flag", object_id=flag.pk,
                     after=flag_fields(flag))
        ops.publish_on_commit(environment)
        broadcasts.flag_update_on_commit(flag, environment)
    return flag


@dataclass(frozen=True)
class Step:
    """One operation of a grouped change (``flag_change``), validated for shape when built."""

    operation: str
    payload: dict[str, Any]


def update_step(changes: dict[str, Any]) -> Step:
    fixed = sorted(set(changes) & set(IMMUTABLE_FIELDS))
    if fixed:
        raise ValidationError({name: f"{name} cannot change after the flag is created" for name in fixed})
    unknown = sorted(set(changes) - set(EDITABLE_FIELDS))
    if unknown:
        raise ValidationError({name: "not a field of a flag that can be changed" for name in unknown})
    if not changes:
        raise ValidationError({"__all__": "nothing to change"})
    if set(changes) == {"enabled"}:
        operation = Op.ENABLE_FLAG if changes["enabled"] else Op.DISABLE_FLAG
    else:
        operation = Op.UPDATE_FLAG
    return Step(operation, {"changes": _jsonable(changes)})


def rule_create_step(**fields: Any) -> Step:
    return Step(Op.CREATE_RULE, {"rule": _rule_fields(fields, partial=False)})


def rule_update_step(rule_id: int, **changes: Any) -> Step:
    if not changes:
        raise ValidationError({"__all__": "nothing to change"})
    return Step(Op.UPDATE_RULE, {"rule_id": rule_id, "changes": _rule_fields(changes, partial=True)})


def rule_delete_step(rule_id: int) -> Step:
    return Step(Op.DELETE_RULE, {"rule_id": rule_id})


def flag_change(
    *,
    actor: Actor,
    flag: Flag | int | str,
    steps: list[Step],
    rationale: str = "",
    expected_version: int | None = None,
) -> Outcome:
    """Several changes to one flag as one: all applied, or (ASIL-D) one change request for all.

    Raises ``StepsRefused`` naming every refused step; then nothing is applied. With
    ``expected_version``, refuses (Conflict ``stale``) when the flag has moved past it.
    """
    if not steps:
        raise ValidationError({"__all__": "nothing to change"})
    if len(steps) == 1:
        operation, payload = steps[0].operation, steps[0].payload
    else:
        operation = Op.BATCH
        payload = {"steps": [{"operation": step.operation, "payload": step.payload} for step in steps]}
    return _execute(actor=actor, flag=flag, operation=operation, payload=payload, rationale=rationale,
                    expected_version=expected_version)
def flag_update(*, actor: Actor, flag: Flag | int | str, changes: dict[str, Any], rationale: str = "") -> Outcome:
    step = update_step(changes)
    return _execute(actor=actor, flag=flag, operation=step.operation, payload=step.payload, rationale=rationale)


def flag_set_enabled(*, actor: Actor, flag: Flag | int | str, enabled: bool, rationale: str = "") -> Outcome:
    return flag_update(actor=actor, flag=flag, changes={"enabled": enabled}, rationale=rationale)


def flag_archive(*, actor: Actor, flag: Flag | int | str, rationale: str = "") -> Outcome:
    return _execute(actor=actor, flag=flag, operation=Op.ARCHIVE_FLAG, payload={}, rationale=rationale)


def _jsonable(changes: dict[str, Any]) -> dict[str, Any]:
    """Payloads are stored in change requests: teams by name, everything else as JSON."""
    out = dict(changes)
    if isinstance(out.get("owner_team"), Group):
        out["owner_team"] = out["owner_team"].name
    return out


# -- rules ---------------------------------------------------------------------------


def _rule_fields(fields: dict[str, Any], *, partial: bool) -> dict[str, Any]:
    unknown = sorted(set(fields) - set(RULE_FIELDS))
    if unknown:
        raise ValidationError({name: "not a field of a rule" for name in unknown})
    if not partial and "type" not in fields:
        raise ValidationError({"type": "the rule type is required"})
    return dict(fields)


def rule_create(*, actor: Actor, flag: Flag | int | str, rationale: str = "", **fields: Any) -> Outcome:
    return flag_change(actor=actor, flag=flag, steps=[rule_create_step(**fields)], rationale=rationale)


def rule_update(
    *, actor: Actor, flag: Flag | int | str, rule_id: int, rationale: str = "", **changes: Any
) -> Outcome:
    return flag_change(actor=actor, flag=flag, steps=[rule_update_step(rule_id, **changes)], rationale=rationale)


def rule_delete(*, actor: Actor, flag: Flag | int | str, rule_id: int, rationale: str = "") -> Outcome:
    return flag_change(actor=actor, flag=flag, steps=[rule_delete_step(rule_id)], rationale=rationale)


# -- kill switch -----------------------------------------------------------------------


def kill_switch_engage(*, actor: Actor, flag: Flag | int | str, reason: str) -> Outcome:
    """Toward the safe state: applies at once on any flag, ASIL-D included."""
    if not isinstance(reason, str) or not reason.strip():
        raise ValidationError({"reason": "say why the flag is killed"})
    with transaction.atomic():
        locked = ops.lock(flag)
        if not permissions.can_engage_kill_switch(actor, locked):
            raise PermissionDenied(f"{actor.label} may not engage the kill switch of {locked.key}")
        actor_check_current(actor=actor)
        if locked.archived_at is not None:
            raise Conflict(f"flag {locked.key} is archived", code=FlagCode.ARCHIVED)
        engaged = selectors.engaged_kill_switches(locked).first()
        if engaged is not None:
            return Outcome(locked, rule=engaged)  # already killed: nothing to do, nothing to audit
        applied, effects = ops.apply(locked, ops.ENGAGE_KILL_SWITCH, {"reason": reason.strip()}, actor)
        rule = ops.rule_of(effects)
        event = KillSwitchEvent.objects.filter(rule=rule).order_by("-id").first()
        return Outcome(applied, rule=rule, audit_actions=[e.action for e in effects], kill_switch_event=event)


def kill_switch_lift(*, actor: Actor, flag: Flag | int | str, rationale: str = "") -> Outcome:
    """Away from the safe state: on an ASIL-D flag this becomes a change request."""
    return _execute(actor=actor, flag=flag, operation=Op.LIFT_KILL_SWITCH, payload={}, rationale=rationale)



# -- kill-switch delivery: written in batches by the vehicle sockets (realtime) ------------------

# An ACK counts for the kill switches of the vehicle's environment engaged this long ago at most.
ACK_WINDOW_DAYS = 30


def kill_switch_sent_record(*, sent: dict[int, int]) -> None:
    """Add the frames each server process wrote: ``sent`` maps event id -> frames written."""
    for event_id, count in sent.items():
        if count:
            KillSwitchEvent.objects.filter(pk=event_id).update(sent=F("sent") + count)


def kill_switch_acks_record(*, acks: list[tuple[Any, ...]]) -> None:
    """Record ``(vin, environment, version, acked_at[, after])`` acknowledgements: each
    acknowledges every kill switch of its environment at or below that version (and above
    ``after``, the version the same connection acknowledged before: those are recorded
    already), engaged after the vehicle was registered (it was targeted), once per vehicle
    (repeats change nothing)."""
    if not acks:
        return
    since = timezone.now() - timedelta(days=ACK_WINDOW_DAYS)
    environments = {ack[1] for ack in acks}
    events_by_env: dict[str, list[KillSwitchEvent]] = {}
    for event in KillSwitchEvent.objects.filter(environment__in=environments, engaged_at__gte=since).only(
            "id", "environment", "version", "engaged_at"):
        events_by_env.setdefault(event.environment, []).append(event)
    registered = dict(Vehicle.objects.filter(vin__in={ack[0] for ack in acks}).values_list("vin", "created_at"))
    rows: dict[tuple[int, str], KillSwitchAck] = {}
    for ack in sorted(acks, key=lambda ack: ack[3]):
        vin, environment, version, acked_at = ack[:4]
        after = ack[4] if len(ack) > 4 else -1
        created = registered.get(vin)
        if created is None:
            continue
        for event in events_by_env.get(environment, []):
            if after < event.version <= version and event.engaged_at >= created and (event.pk, vin) not in rows:
                rows[(event.pk, vin)] = KillSwitchAck(event=event, vehicle_id=vin, version=version, acked_at=acked_at)
    KillSwitchAck.objects.bulk_create(list(rows.values()), ignore_conflicts=True, batch_size=1000)
