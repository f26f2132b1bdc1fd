"""Every change to flags and rules, and the ASIL-D two-person rule, in one place.

Admin, API and code all call these functions; nothing else writes flags, rules or
change requests. Each change has one shape (``_execute``): lock the flag, check who may
do it, apply it inside a savepoint, and then either keep it (version and revision bumped,
audit written in the same transaction, snapshot published after commit) or, for an
ASIL-D flag, roll the savepoint back and store the proposed before/after as a change
request that a second person (SAFETY) must approve. Approval re-applies the same
operation through the same code, so what is approved is exactly what was shown.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.apps import apps
from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, Max
from django.utils import timezone

from audit import services as audit
from audit.context import Actor
from flags import permissions, snapshots
from flags.errors import Conflict, NotFound, PermissionDenied, ServiceError
from flags.models import ChangeRequest, Flag, Revision, Rule, RuleType, SafetyLevel

Op = ChangeRequest.Operation

# Fields a flag update may change; key and type are fixed for a flag's life.
EDITABLE_FIELDS = ("name", "description", "default_value", "enabled", "safety_level", "environment", "ttl_seconds",
                   "owner_team")
IMMUTABLE_FIELDS = ("key", "type")
RULE_FIELDS = ("type", "priority", "enabled", "conditions", "value", "variant")


@dataclass
class Outcome:
    """What a change did: applied to ``flag``, or held as ``change_request`` for approval."""

    flag: Flag
    change_request: ChangeRequest | None = None
    rule: Rule | None = None
    audit_actions: list[str] = field(default_factory=list)

    @property
    def applied(self) -> bool:
        return self.change_request is None


@dataclass
class _Effect:
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


def _full_clean(instance: Flag | Rule, *, exclude: list[str] | None = None) -> None:
    instance.full_clean(exclude=exclude, validate_unique=False, validate_constraints=False)


# -- operations: each mutates the locked flag's rows and reports its effects -------------


def _resolve_team(value: Any) -> Group | None:
    if value in (None, ""):
        return None
    if isinstance(value, Group):
        return value
    found = Group.objects.filter(name=value).first() if isinstance(value, str) else Group.objects.filter(pk=value).first()
    if found is None:
        raise ValidationError({"owner_team": f"no team {value!r}"})
    return found


def _op_update_flag(flag: Flag, payload: dict[str, Any], actor: Actor) -> list[_Effect]:
    changes = dict(payload["changes"])
    before = flag_fields(flag)
    old_team = flag.owner_team
    if "owner_team" in changes:
        flag.owner_team = _resolve_team(changes.pop("owner_team"))
    for name, value in changes.items():
        setattr(flag, name, value)
    _full_clean(flag, exclude=["key"])
    flag.save()
    permissions.set_owner_permissions(flag, old_team, flag.owner_team)
    after = flag_fields(flag)
    changed = {k for k in before if before[k] != after[k]} - {"version"}
    if changed == {"enabled"}:
        action = "ENABLE_FLAG" if flag.enabled else "DISABLE_FLAG"
    else:
        action = "UPDATE_FLAG"
    return [_Effect(action, "flag", flag.pk, before, after)]


def _op_archive_flag(flag: Flag, payload: dict[str, Any], actor: Actor) -> list[_Effect]:
    before = flag_fields(flag)
    flag.archived_at = timezone.now()
    flag.save()
    return [_Effect("ARCHIVE_FLAG", "flag", flag.pk, before, flag_fields(flag))]


def _rule_for(flag: Flag, rule_id: Any) -> Rule:
    rule = Rule.objects.filter(flag=flag, pk=rule_id).first()
    if rule is None:
        raise NotFound(f"flag {flag.key} has no rule {rule_id}")
    return rule


def _save_rule(rule: Rule) -> None:
    _full_clean(rule)
    clash = Rule.objects.filter(flag_id=rule.flag_id, type=rule.type, priority=rule.priority).exclude(pk=rule.pk)
    if clash.exists():
        raise ValidationError({"priority": f"another {rule.type} rule of this flag has priority {rule.priority}"})
    try:
        with transaction.atomic():
            rule.save()
    except IntegrityError as exc:  # a concurrent writer took the priority
        raise ValidationError({"priority": "another rule of this type has this priority"}) from exc


def _op_create_rule(flag: Flag, payload: dict[str, Any], actor: Actor) -> list[_Effect]:
    fields = dict(payload["rule"])
    if fields.get("priority") is None:
        top = Rule.objects.filter(flag=flag).aggregate(top=Max("priority"))["top"]
        fields["priority"] = 10 if top is None else top + 10
    rule = Rule(flag=flag, **fields)
    _save_rule(rule)
    return [_Effect("CREATE_RULE", "rule", rule.pk, None, snapshots.rule_to_dict(rule), rule)]


def _op_update_rule(flag: Flag, payload: dict[str, Any], actor: Actor) -> list[_Effect]:
    rule = _rule_for(flag, payload["rule_id"])
    before = snapshots.rule_to_dict(rule)
    for name, value in payload["changes"].items():
        setattr(rule, name, value)
    rule.updated_at = timezone.now()
    _save_rule(rule)
    after = snapshots.rule_to_dict(rule)
    lifting = before["type"] == RuleType.KILL_SWITCH and before["enabled"] and not (
        after["type"] == RuleType.KILL_SWITCH and after["enabled"]
    )
    return [_Effect("LIFT_KILL_SWITCH" if lifting else "UPDATE_RULE", "rule", rule.pk, before, after, rule)]


def _op_delete_rule(flag: Flag, payload: dict[str, Any], actor: Actor) -> list[_Effect]:
    rule = _rule_for(flag, payload["rule_id"])
    before = snapshots.rule_to_dict(rule)
    rule_id = rule.pk
    rule.delete()
    action = "LIFT_KILL_SWITCH" if before["type"] == RuleType.KILL_SWITCH and before["enabled"] else "DELETE_RULE"
    return [_Effect(action, "rule", rule_id, before, None)]


def _op_lift_kill_switch(flag: Flag, payload: dict[str, Any], actor: Actor) -> list[_Effect]:
    effects = []
    for rule in Rule.objects.filter(flag=flag, type=RuleType.KILL_SWITCH, enabled=True).order_by("id"):
        before = snapshots.rule_to_dict(rule)
        rule.enabled = False
        rule.updated_at = timezone.now()
        rule.save(update_fields=["enabled", "updated_at"])
        effects.append(_Effect("LIFT_KILL_SWITCH", "rule", rule.pk, before, snapshots.rule_to_dict(rule), rule))
    if not effects:
        raise Conflict(f"flag {flag.key} has no engaged kill switch", code="not_killed")
    return effects


_OPERATIONS: dict[str, Callable[[Flag, dict[str, Any], Actor], list[_Effect]]] = {
    Op.UPDATE_FLAG: _op_update_flag,
    Op.ENABLE_FLAG: _op_update_flag,
    Op.DISABLE_FLAG: _op_update_flag,
    Op.ARCHIVE_FLAG: _op_archive_flag,
    Op.CREATE_RULE: _op_create_rule,
    Op.UPDATE_RULE: _op_update_rule,
    Op.DELETE_RULE: _op_delete_rule,
    Op.LIFT_KILL_SWITCH: _op_lift_kill_switch,
}


# -- the one shape of a change ----------------------------------------------------------


def needs_approval(flag: Flag) -> bool:
    """Every change to an ASIL-D flag waits for a second person, except toward safety
    (a kill switch), which has its own path; raising a flag to ASIL-D is a change to a
    flag that is not ASIL-D yet, so it applies at once."""
    return flag.safety_level == SafetyLevel.ASIL_D


def _lock(flag: Flag | int | str) -> Flag:
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


def _bump_revisions(*environments: str) -> None:
    for environment in set(environments):
        updated = Revision.objects.filter(environment=environment).update(value=F("value") + 1)
        if not updated:
            Revision.objects.get_or_create(environment=environment, defaults={"value": 1})


def _after_commit(*environments: str) -> None:
    for environment in set(environments):
        # robust: a cache outage after commit is logged, never reported as a failed change;
        # the published ETag expires, so readers rebuild from the database soon after.
        transaction.on_commit(_publisher(environment), robust=True)


def _publisher(environment: str) -> Callable[[], None]:
    # A named function, not functools.partial: Django logs a failed robust hook by its
    # __qualname__, which a partial lacks, so the failure escaped the commit as AttributeError.
    def publish_snapshot() -> None:
        snapshots.publish(environment)

    return publish_snapshot


def _apply(
    flag: Flag, operation: str, payload: dict[str, Any], actor: Actor, *, change_request_id: int | None = None
) -> tuple[Flag, list[_Effect]]:
    """Apply an operation to a locked flag for good: version, revision, audit, publish."""
    old_environment = flag.environment
    effects = [e for e in _OPERATIONS[operation](flag, payload, actor) if e.before != e.after]
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
    _bump_revisions(old_environment, flag.environment)
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
    _after_commit(old_environment, flag.environment)
    return flag, effects


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
        locked = _lock(flag)
        if expected_version is not None and locked.version != expected_version:
            # The caller decided on what it saw at that version; someone changed the flag since.
            raise Conflict(
                f"flag {locked.key} changed since it was loaded (version {expected_version} -> {locked.version})",
                code="stale",
            )
        if not permissions.can_change(actor, locked):
            raise PermissionDenied(f"{actor.label} may not change flag {locked.key}")
        if locked.archived_at is not None:
            raise Conflict(f"flag {locked.key} is archived; archived flags do not change", code="archived")
        _check_owner_change(actor, locked, operation, payload)
        if not needs_approval(locked):
            applied, effects = _apply(locked, operation, payload, actor)
            return Outcome(applied, rule=_rule_of(effects), audit_actions=[e.action for e in effects])
        return _propose(locked, operation, payload, actor, rationale)


def _check_owner_change(actor: Actor, flag: Flag, operation: str, payload: dict[str, Any]) -> None:
    """Who may hand the flag to which team is checked when the change is made or requested,
    never on approval (the SAFETY approver need not belong to the team)."""
    steps: list[dict[str, Any]] = (
        payload["steps"] if operation == Op.BATCH else [{"operation": operation, "payload": payload}]
    )
    for step in steps:
        changes = step["payload"].get("changes", {}) if step["operation"] == Op.UPDATE_FLAG else {}
        if "owner_team" in changes:
            new_team = _resolve_team(changes["owner_team"])
            problem = permissions.owner_change_problem(actor, flag.owner_team, new_team)
            if problem:
                raise ValidationError({"owner_team": problem})


def _rule_of(effects: list[_Effect]) -> Rule | None:
    return next((effect.rule for effect in effects if effect.rule is not None), None)


def _propose(flag: Flag, operation: str, payload: dict[str, Any], actor: Actor, rationale: str) -> Outcome:
    """Hold a change to an ASIL-D flag as a change request with its exact before/after."""
    if not rationale or not rationale.strip():
        raise ValidationError(
            {"rationale": "changes to ASIL-D flags need a rationale (hazard analysis or safety-case reference)"}
        )
    before = flag_state(flag)
    # Apply in a savepoint to validate and to see the result, then undo it.
    savepoint = transaction.savepoint()
    try:
        _OPERATIONS[operation](flag, payload, actor)
        after = flag_state(flag)
    finally:
        transaction.savepoint_rollback(savepoint)
    flag.refresh_from_db()
    if before == after:
        raise ValidationError({"__all__": "the change would change nothing"})
    request = ChangeRequest(
        flag=flag,
        operation=operation,
        payload=payload,
        before=before,
        after=after,
        base_version=flag.version,
        rationale=rationale.strip(),
        requested_by=actor.user,
        requested_by_api_key_id=getattr(actor.api_key, "pk", None),
        requested_by_label=actor.label,
        requested_at=timezone.now(),
        expires_at=timezone.now() + timedelta(hours=settings.CHANGE_REQUEST_TTL_HOURS),
    )
    request.content_hash = request.compute_content_hash()
    request.save()
    audit.record(
        actor=actor,
        action="REQUEST_CHANGE",
        flag=flag,
        object_type="change_request",
        object_id=request.pk,
        before=before,
        after={"operation": operation, "payload": payload, "proposed": after, "rationale": request.rationale},
        change_request_id=request.pk,
    )
    return Outcome(flag, change_request=request, audit_actions=["REQUEST_CHANGE"])


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
    team = _resolve_team(owner_team)
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
    _full_clean(flag)
    with transaction.atomic():
        if Flag.objects.filter(key=key).exists():
            raise ValidationError({"key": f"a flag with key {key!r} exists already (keys are never reused)"})
        try:
            with transaction.atomic():
                flag.save()
        except IntegrityError as exc:
            raise ValidationError({"key": f"a flag with key {key!r} exists already"}) from exc
        permissions.set_owner_permissions(flag, None, team)
        _bump_revisions(environment)
        audit.record(actor=actor, action="CREATE_FLAG", flag=flag, object_type="flag", object_id=flag.pk,
                     after=flag_fields(flag))
        _after_commit(environment)
    return flag


@dataclass(frozen=True)
class Step:
    """One operation of a grouped change (``flag_change``), validated for shape when built."""

    operation: str
    payload: dict[str, Any]


class StepsRefused(Exception):
    """Some steps of a grouped change were refused; ``errors`` maps step index -> error."""

    def __init__(self, errors: dict[int, ValidationError | ServiceError]) -> None:
        super().__init__(f"{len(errors)} step(s) refused")
        self.errors = errors


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


def _op_batch(flag: Flag, payload: dict[str, Any], actor: Actor) -> list[_Effect]:
    effects: list[_Effect] = []
    errors: dict[int, ValidationError | ServiceError] = {}
    for index, step in enumerate(payload["steps"]):
        if step["operation"] not in _BATCHABLE:
            raise ValidationError({"__all__": f"{step['operation']} cannot be part of a grouped change"})
        # Each step in its own savepoint, so that every refusal is reported, not only the first.
        savepoint = transaction.savepoint()
        try:
            effects += _OPERATIONS[step["operation"]](flag, step["payload"], actor)
        except (ValidationError, ServiceError) as exc:
            transaction.savepoint_rollback(savepoint)
            flag.refresh_from_db()
            errors[index] = exc
        else:
            transaction.savepoint_commit(savepoint)
    if errors:
        raise StepsRefused(errors)
    return effects


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
        locked = _lock(flag)
        if not permissions.can_engage_kill_switch(actor, locked):
            raise PermissionDenied(f"{actor.label} may not engage the kill switch of {locked.key}")
        if locked.archived_at is not None:
            raise Conflict(f"flag {locked.key} is archived", code="archived")
        engaged = Rule.objects.filter(flag=locked, type=RuleType.KILL_SWITCH, enabled=True).first()
        if engaged is not None:
            return Outcome(locked, rule=engaged)  # already killed: nothing to do, nothing to audit
        applied, effects = _apply(locked, "kill_switch", {"reason": reason.strip()}, actor)
        return Outcome(applied, rule=_rule_of(effects), audit_actions=[e.action for e in effects])


def _op_engage_kill_switch(flag: Flag, payload: dict[str, Any], actor: Actor) -> list[_Effect]:
    conditions = {"force_disabled": True, "reason": payload["reason"]}
    rule = Rule.objects.filter(flag=flag, type=RuleType.KILL_SWITCH).order_by("id").first()
    before = snapshots.rule_to_dict(rule) if rule is not None else None
    if rule is None:
        top = Rule.objects.filter(flag=flag).aggregate(top=Max("priority"))["top"]
        rule = Rule(flag=flag, type=RuleType.KILL_SWITCH, priority=(top or 0) + 1000)
    rule.conditions = conditions
    rule.enabled = True
    rule.updated_at = timezone.now()
    _save_rule(rule)
    return [_Effect("KILL_SWITCH", "rule", rule.pk, before, snapshots.rule_to_dict(rule), rule)]


_OPERATIONS["kill_switch"] = _op_engage_kill_switch
_OPERATIONS[Op.BATCH] = _op_batch
# Engaging a kill switch has its own path (it never waits); batches do not nest.
_BATCHABLE = frozenset(_OPERATIONS) - {"kill_switch", Op.BATCH}


def kill_switch_lift(*, actor: Actor, flag: Flag | int | str, rationale: str = "") -> Outcome:
    """Away from the safe state: on an ASIL-D flag this becomes a change request."""
    return _execute(actor=actor, flag=flag, operation=Op.LIFT_KILL_SWITCH, payload={}, rationale=rationale)


# -- change requests ----------------------------------------------------------------------


def _lock_request(change_request: ChangeRequest | int) -> ChangeRequest:
    pk = change_request.pk if isinstance(change_request, ChangeRequest) else change_request
    found = ChangeRequest.objects.select_for_update().filter(pk=pk).first()
    if found is None:
        raise NotFound(f"no change request {pk}")
    return found


def _check_decidable(request: ChangeRequest, actor: Actor) -> None:
    if request.status != ChangeRequest.Status.PENDING:
        raise Conflict(f"change request {request.pk} is {request.status} already", code="already_decided")
    if not permissions.can_approve(actor):
        raise PermissionDenied("only SAFETY engineers decide change requests to ASIL-D flags")
    if is_requester(actor, request):
        raise PermissionDenied("the requester cannot decide their own change request: a second person must")


def _requester_person_ids(request: ChangeRequest) -> frozenset[int]:
    ids = {request.requested_by_id}
    if request.requested_by_api_key_id is not None:
        api_key_model = apps.get_model("accounts", "ApiKey")
        ids |= set(api_key_model.objects.filter(pk=request.requested_by_api_key_id)
                   .values_list("user_id", "created_by_id").first() or ())
    return frozenset(i for i in ids if i is not None)


def is_requester(actor: Actor, request: ChangeRequest) -> bool:
    """The same API key, or any person behind the request (user, key owner, key creator)."""
    if actor.api_key is not None and actor.api_key.pk == request.requested_by_api_key_id:
        return True
    return not actor.person_ids.isdisjoint(_requester_person_ids(request))


def change_request_approve(*, actor: Actor, change_request: ChangeRequest | int, comment: str = "") -> Outcome:
    with transaction.atomic():
        request = _lock_request(change_request)
        _check_decidable(request, actor)
        if request.is_expired:
            raise Conflict(f"change request {request.pk} expired at {request.expires_at:%Y-%m-%d %H:%M} UTC",
                           code="expired")
        if request.compute_content_hash() != request.content_hash:
            raise Conflict(f"change request {request.pk} was altered after it was submitted", code="tampered")
        flag = _lock(request.flag_id)
        if flag.version != request.base_version:
            raise Conflict(
                f"flag {flag.key} changed since the request was made (version {request.base_version} -> "
                f"{flag.version}); make a new request",
                code="stale",
            )
        if flag.archived_at is not None:
            raise Conflict(f"flag {flag.key} is archived", code="archived")
        applied, effects = _apply(flag, request.operation, request.payload, actor, change_request_id=request.pk)
        request.status = ChangeRequest.Status.APPROVED
        request.decided_by = actor.user
        request.decided_by_label = actor.label
        request.decided_at = timezone.now()
        request.decision_comment = comment.strip()
        request.save(update_fields=["status", "decided_by", "decided_by_label", "decided_at", "decision_comment"])
        audit.record(actor=actor, action="APPROVE_CHANGE", flag=applied, object_type="change_request",
                     object_id=request.pk, after={"comment": request.decision_comment, "operation": request.operation},
                     change_request_id=request.pk)
        return Outcome(applied, change_request=None, rule=_rule_of(effects),
                       audit_actions=[e.action for e in effects] + ["APPROVE_CHANGE"])


def change_request_reject(*, actor: Actor, change_request: ChangeRequest | int, reason: str) -> ChangeRequest:
    if not isinstance(reason, str) or not reason.strip():
        raise ValidationError({"reason": "a rejection needs a reason"})
    with transaction.atomic():
        request = _lock_request(change_request)
        _check_decidable(request, actor)
        request.status = ChangeRequest.Status.REJECTED
        request.decided_by = actor.user
        request.decided_by_label = actor.label
        request.decided_at = timezone.now()
        request.decision_comment = reason.strip()
        request.save(update_fields=["status", "decided_by", "decided_by_label", "decided_at", "decision_comment"])
        audit.record(actor=actor, action="REJECT_CHANGE", flag=request.flag, object_type="change_request",
                     object_id=request.pk, after={"reason": request.decision_comment}, change_request_id=request.pk)
    return request


def change_request_withdraw(*, actor: Actor, change_request: ChangeRequest | int) -> ChangeRequest:
    with transaction.atomic():
        request = _lock_request(change_request)
        if request.status != ChangeRequest.Status.PENDING:
            raise Conflict(f"change request {request.pk} is {request.status} already", code="already_decided")
        if not is_requester(actor, request):
            raise PermissionDenied("only the requester can withdraw a change request")
        request.status = ChangeRequest.Status.WITHDRAWN
        request.decided_at = timezone.now()
        request.decided_by_label = actor.label
        request.save(update_fields=["status", "decided_at", "decided_by_label"])
        audit.record(actor=actor, action="WITHDRAW_CHANGE", flag=request.flag, object_type="change_request",
                     object_id=request.pk, change_request_id=request.pk)
    return request
