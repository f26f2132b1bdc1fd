"""The operation core of every change to flags and rules.

Each operation mutates the rows of one locked flag and reports its effects; ``apply``
keeps them for good (version and revision bumped, one audit entry per effect in the same
transaction, the snapshot published after commit). The public doors (``flags.services``)
and governance (``flags.governance``) are the only callers; nothing else writes flags,
rules or change requests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, Max
from django.utils import timezone

from audit import services as audit
from core import presence, transactions
from core.actors import Actor
from core.errors import Conflict, NotFound, ServiceError
from flags import broadcasts, notifications, permissions, selectors, snapshots
from flags.actions import FlagAction
from flags.codes import FlagCode
from flags.models import ChangeRequest, Flag, KillSwitchEvent, Revision, Rule, RuleType, SafetyLevel
from vehicles.models import Vehicle

log = logging.getLogger(__name__)

Op = ChangeRequest.Operation

# Fields a flag update may change; key and type are fixed for a flag's life.
EDITABLE_FIELDS = ("name", "description", "default_value", "enabled", "safety_level", "environment", "ttl_seconds",
                   "owner_team")
IMMUTABLE_FIELDS = ("key", "type")
RULE_FIELDS = ("type", "priority", "enabled", "conditions", "value", "variant")
ENGAGE_KILL_SWITCH = "kill_switch"


@dataclass
class Outcome:
    """What a change did: applied to ``flag``, or held as ``change_request`` for approval."""

    flag: Flag
    change_request: ChangeRequest | None = None
    rule: Rule | None = None
    audit_actions: list[str] = field(default_factory=list)
    kill_switch_event: Any = None  # flags.models.KillSwitchEvent made by an engage

    @property
    def applied(self) -> bool:
        return self.change_request is None


@dataclass
class Effect:
    """What an operation did, for the audit (one entry per effect)."""

    action: str
    object_type: str
    object_id: Any
    before: Any
    after: Any
    rule: Rule | None = None


# -- state -------------------------------------------------------------------------


def flag_fields(flag: Flag) -> dict[str, Any]:
    return {
        "key": flag.key,
        "name": flag.name,
        "description": flag.description,
        "type": flag.type,
        "default_value": flag.default_value,
        "enabled": flag.enabled,
        "safety_level": flag.safety_level,
        "environment": flag.environment,
        "ttl_seconds": flag.ttl_seconds,
        "owner_team": flag.owner_team.name if flag.owner_team is not None else None,
        "version": flag.version,
        "archived": flag.archived_at is not None,
    }


def flag_state(flag: Flag) -> dict[str, Any]:
    """The flag with its rules, as change requests show before and after."""
    rules = list(Rule.objects.filter(flag=flag).order_by("-priority", "id"))
    return {**flag_fields(flag), "rules": [snapshots.rule_to_dict(rule) for rule in rules]}


def full_clean(instance: Flag | Rule, *, exclude: list[str] | None = None) -> None:
    instance.full_clean(exclude=exclude, validate_unique=False, validate_constraints=False)


# -- operations: each mutates the locked flag's rows and reports its effects -------------


def resolve_team(value: Any) -> Group | None:
    if value in (None, ""):
        return None
    if isinstance(value, Group):
        return value
    found = Group.objects.filter(name=value).first() if isinstance(value, str) else Group.objects.filter(pk=value).first()
    if found is None:
        raise ValidationError({"owner_team": f"no team {value!r}"})
    return found


def _op_update_flag(flag: Flag, payload: dict[str, Any], actor: Actor) -> list[Effect]:
    changes = dict(payload["changes"])
    before = flag_fields(flag)
    old_team = flag.owner_team
    if "owner_team" in changes:
        flag.owner_team = resolve_team(changes.pop("owner_team"))
    for name, value in changes.items():
        setattr(flag, name, value)
    full_clean(flag, exclude=["key"])
    flag.save()
    permissions.set_owner_permissions(flag, old_team, flag.owner_team)
    after = flag_fields(flag)
    changed = {k for k in before if before[k] != after[k]} - {"version"}
    if changed == {"enabled"}:
        action = FlagAction.ENABLE_FLAG if flag.enabled else FlagAction.DISABLE_FLAG
    else:
        action = FlagAction.UPDATE_FLAG
    return [Effect(action, "flag", flag.pk, before, after)]


def _op_archive_flag(flag: Flag, payload: dict[str, Any], actor: Actor) -> list[Effect]:
    before = flag_fields(flag)
    flag.archived_at = timezone.now()
    flag.save()
    return [Effect(FlagAction.ARCHIVE_FLAG, "flag", flag.pk, before, flag_fields(flag))]


def _rule_for(flag: Flag, rule_id: Any) -> Rule:
    rule = Rule.objects.filter(flag=flag, pk=rule_id).first()
    if rule is None:
        raise NotFound(f"flag {flag.key} has no rule {rule_id}")
    return rule


def save_rule(rule: Rule) -> None:
    full_clean(rule)
    clash = Rule.objects.filter(flag_id=rule.flag_id, type=rule.type, priority=rule.priority).exclude(pk=rule.pk)
    if clash.exists():
        raise ValidationError({"priority": f"another {rule.type} rule of this flag has priority {rule.priority}"})
    try:
        with transaction.atomic():
            rule.save()
    except IntegrityError as exc:  # a concurrent writer took the priority
        raise ValidationError({"priority": "another rule of this type has this priority"}) from exc


def _op_create_rule(flag: Flag, payload: dict[str, Any], actor: Actor) -> list[Effect]:
    fields = dict(payload["rule"])
    limit = int(settings.FLAG_MAX_RULES)
    if Rule.objects.filter(flag=flag).count() >= limit:
        # Every rule costs every evaluation of the flag, on the server and on each vehicle.
        raise ValidationError({"__all__": f"a flag has at most {limit} rules; flag {flag.key} has {limit} already"})
    if fields.get("priority") is None:
        top = Rule.objects.filter(flag=flag).aggregate(top=Max("priority"))["top"]
        fields["priority"] = 10 if top is None else top + 10
    rule = Rule(flag=flag, **fields)
    save_rule(rule)
    return [Effect(FlagAction.CREATE_RULE, "rule", rule.pk, None, snapshots.rule_to_dict(rule), rule)]


def _op_update_rule(flag: Flag, payload: dict[str, Any], actor: Actor) -> list[Effect]:
    rule = _rule_for(flag, payload["rule_id"])
    before = snapshots.rule_to_dict(rule)
    for name, value in payload["changes"].items():
        setattr(rule, name, value)
    rule.updated_at = timezone.now()
    save_rule(rule)
    after = snapshots.rule_to_dict(rule)
    lifting = selectors.is_killed([before]) and not selectors.is_killed([after])
    return [Effect(FlagAction.LIFT_KILL_SWITCH if lifting else FlagAction.UPDATE_RULE, "rule", rule.pk, before, after, rule)]


def _op_delete_rule(flag: Flag, payload: dict[str, Any], actor: Actor) -> list[Effect]:
    rule = _rule_for(flag, payload["rule_id"])
    before = snapshots.rule_to_dict(rule)
    rule_id = rule.pk
    rule.delete()
    action = FlagAction.LIFT_KILL_SWITCH if selectors.is_killed([before]) else FlagAction.DELETE_RULE
    return [Effect(action, "rule", rule_id, before, None)]


def _op_lift_kill_switch(flag: Flag, payload: dict[str, Any], actor: Actor) -> list[Effect]:
    effects = []
    for rule in selectors.engaged_kill_switches(flag):
        before = snapshots.rule_to_dict(rule)
        rule.enabled = False
        rule.updated_at = timezone.now()
        rule.save(update_fields=["enabled", "updated_at"])
        effects.append(Effect(FlagAction.LIFT_KILL_SWITCH, "rule", rule.pk, before, snapshots.rule_to_dict(rule), rule))
    if not effects:
        raise Conflict(f"flag {flag.key} has no engaged kill switch", code=FlagCode.NOT_KILLED)
    return effects


class StepsRefused(Exception):
    """Some steps of a grouped change were refused; ``errors`` maps step index -> error."""

    def __init__(self, errors: dict[int, ValidationError | ServiceError]) -> None:
        super().__init__(f"{len(errors)} step(s) refused")
        self.errors = errors


def _op_batch(flag: Flag, payload: dict[str, Any], actor: Actor) -> list[Effect]:
    effects: list[Effect] = []
    errors: dict[int, ValidationError | ServiceError] = {}
    for index, step in enumerate(payload["steps"]):
        if step["operation"] not in BATCHABLE:
            raise ValidationError({"__all__": f"{step['operation']} cannot be part of a grouped change"})
        # Each step in its own savepoint, so that every refusal is reported, not only the first.
        savepoint = transaction.savepoint()
        try:
            effects += OPERATIONS[step["operation"]](flag, step["payload"], actor)
        except (ValidationError, ServiceError) as exc:
            transaction.savepoint_rollback(savepoint)
            flag.refresh_from_db()
            errors[index] = exc
        else:
            transaction.savepoint_commit(savepoint)
    if errors:
        raise StepsRefused(errors)
    return effects


def _op_engage_kill_switch(flag: Flag, payload: dict[str, Any], actor: Actor) -> list[Effect]:
    conditions = {"force_disabled": True, "reason": payload["reason"]}
    rule = Rule.objects.filter(flag=flag, type=RuleType.KILL_SWITCH).order_by("id").first()
    before = snapshots.rule_to_dict(rule) if rule is not None else None
    if rule is None:
        top = Rule.objects.filter(flag=flag).aggregate(top=Max("priority"))["top"]
        rule = Rule(flag=flag, type=RuleType.KILL_SWITCH, priority=(top or 0) + 1000)
    rule.conditions = conditions
    rule.enabled = True
    rule.updated_at = timezone.now()
    save_rule(rule)
    return [Effect(FlagAction.KILL_SWITCH, "rule", rule.pk, before, snapshots.rule_to_dict(rule), rule)]


# Every operation, in one place. Engaging a kill switch has its own door (it never waits
# for approval, so it is no change-request operation); batches do not nest.
OPERATIONS: dict[str, Callable[[Flag, dict[str, Any], Actor], list[Effect]]] = {
    Op.UPDATE_FLAG: _op_update_flag,
    Op.ENABLE_FLAG: _op_update_flag,
    Op.DISABLE_FLAG: _op_update_flag,
    Op.ARCHIVE_FLAG: _op_archive_flag,
    Op.CREATE_RULE: _op_create_rule,
    Op.UPDATE_RULE: _op_update_rule,
    Op.DELETE_RULE: _op_delete_rule,
    Op.LIFT_KILL_SWITCH: _op_lift_kill_switch,
    Op.BATCH: _op_batch,
    ENGAGE_KILL_SWITCH: _op_engage_kill_switch,
}
BATCHABLE = frozenset(OPERATIONS) - {ENGAGE_KILL_SWITCH, Op.BATCH}

# -- the one shape of a change ----------------------------------------------------------


def needs_approval(flag: Flag) -> bool:
    """Every change to an ASIL-D flag waits for a second person, except toward safety
    (a kill switch), which has its own path; raising a flag to ASIL-D is a change to a
    flag that is not ASIL-D yet, so it applies at once."""
    return flag.safety_level == SafetyLevel.ASIL_D


def lock(flag: Flag | int | str) -> Flag:
    query = Flag.objects.select_for_update()
    if isinstance(flag, Flag):
        found = query.filter(pk=flag.pk).first()
    elif isinstance(flag, int):
        found = query.filter(pk=flag).first()
    else:
        found = query.filter(key=flag).first()
    if found is None:
        raise NotFound(f"no flag {getattr(flag, 'key', flag)}")
    return found


def bump_revisions(*environments: str) -> None:
    for environment in set(environments):
        updated = Revision.objects.filter(environment=environment).update(value=F("value") + 1)
        if not updated:
            Revision.objects.get_or_create(environment=environment, defaults={"value": 1})


def publish_on_commit(*environments: str) -> None:
    for environment in set(environments):
        # robust: a cache outage after commit is logged, never reported as a failed change;
        # the published ETag expires, so readers rebuild from the database soon after.
        transactions.after_commit(snapshots.publish, environment)


def apply(
    flag: Flag, operation: str, payload: dict[str, Any], actor: Actor, *, change_request_id: int | None = None
) -> tuple[Flag, list[Effect]]:
    """Apply an operation to a locked flag for good: version, revision, audit, publish; and when
    the change engages the flag's kill switch (the engage door, a kill-switch rule created or
    enabled, an approved batch), the kill-switch event with its push and notification."""
    old_environment = flag.environment
    was_killed = selectors.engaged_kill_switches(flag).exists()
    effects = [e for e in OPERATIONS[operation](flag, payload, actor) if e.before != e.after]
    if not effects:
        # Nothing changed (same values again): no new version, no audit entry, nothing to publish.
        flag.refresh_from_db()
        return flag, []
    flag.version = F("version") + 1
    flag.updated_at = timezone.now()
    if actor.user is not None:
        flag.updated_by = actor.user
    flag.save(update_fields=["version", "updated_at", "updated_by"])
    flag.refresh_from_db()
    bump_revisions(old_environment, flag.environment)
    for effect in effects:
        audit.record(
            actor=actor,
            action=effect.action,
            flag=flag,
            object_type=effect.object_type,
            object_id=effect.object_id,
            before=effect.before,
            after=effect.after,
            change_request_id=change_request_id,
        )
    publish_on_commit(old_environment, flag.environment)
    engaged = None if was_killed else selectors.engaged_kill_switches(flag).first()
    if operation != ENGAGE_KILL_SWITCH:  # the engage door's KILL_SWITCH frame carries the whole change
        broadcasts.flag_update_on_commit(flag, old_environment, flag.environment)
    if engaged is not None:
        kill_switch_event(flag, engaged, actor)
    _notify_lift(flag, effects, actor, change_request_id)
    return flag, effects


def kill_switch_event(flag: Flag, rule: Rule, actor: Actor) -> KillSwitchEvent:
    """The delivery record of a kill switch that this transaction engages: whom it targets
    (registered and online now), its frame pushed after commit, the webhook notified."""
    event = KillSwitchEvent.objects.create(
        flag=flag, rule=rule, environment=flag.environment, version=broadcasts.revision(flag.environment),
        reason=str((rule.conditions or {}).get("reason", "")), engaged_at=timezone.now(), engaged_by=actor.label,
        targeted_all=Vehicle.objects.filter(environment=flag.environment).count(),
        targeted_online=_online_now(flag.environment))
    broadcasts.kill_switch_on_commit(event)
    notifications.kill_switch_engaged_on_commit(event, flag)
    return event


def _online_now(environment: str) -> int | None:
    try:
        return presence.online_count(environment)
    except Exception as exc:  # noqa: BLE001 - Redis down: the engage goes on, the figure is unknown
        log.warning("online vehicles of %s unknown at the engage (%s)", environment, exc)
        return None


def _notify_lift(flag: Flag, effects: list[Effect], actor: Actor, change_request_id: int | None) -> None:
    """A change that took the flag out of its kill switch (lift, rule disabled or deleted, an
    approved request) is announced after commit, as the engage is."""
    lifts = [effect for effect in effects if effect.action == FlagAction.LIFT_KILL_SWITCH]
    if not lifts or selectors.engaged_kill_switches(flag).exists():
        return
    was = lifts[0].before if isinstance(lifts[0].before, dict) else {}
    notifications.kill_switch_lifted_on_commit(
        flag, by=actor.label, at=flag.updated_at, was_reason=str((was.get("conditions") or {}).get("reason", "")),
        change_request_id=change_request_id)


def check_owner_change(actor: Actor, flag: Flag, operation: str, payload: dict[str, Any]) -> None:
    """Who may hand the flag to which team is checked when the change is made or requested,
    never on approval (the SAFETY approver need not belong to the team)."""
    steps: list[dict[str, Any]] = (
        payload["steps"] if operation == Op.BATCH else [{"operation": operation, "payload": payload}]
    )
    for step in steps:
        changes = step["payload"].get("changes", {}) if step["operation"] == Op.UPDATE_FLAG else {}
        if "owner_team" in changes:
            new_team = resolve_team(changes["owner_team"])
            problem = permissions.owner_change_problem(actor, flag.owner_team, new_team)
            if problem:
                raise ValidationError({"owner_team": problem})


def rule_of(effects: list[Effect]) -> Rule | None:
    return next((effect.rule for effect in effects if effect.rule is not None), None)

