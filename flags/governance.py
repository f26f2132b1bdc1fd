"""The ASIL-D two-person rule: propose, approve, reject, withdraw.

A change to an ASIL-D flag is applied in a savepoint (validated exactly as a real change),
rolled back, and stored as a change request with its exact before/after, base version,
rationale and content hash. Approval re-runs the same operation through
``operations.apply``, so what is approved is exactly what was shown. Callers come through
the doors in ``flags.services``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from accounts.services import actor_check_current
from audit import services as audit
from core.actors import Actor
from core.errors import Conflict, NotFound, PermissionDenied
from flags import permissions
from flags.actions import FlagAction
from flags.codes import FlagCode
from flags.models import ChangeRequest, Flag
from flags.operations import OPERATIONS, Outcome, apply, flag_state, lock, rule_of


def propose(flag: Flag, operation: str, payload: dict[str, Any], actor: Actor, rationale: str) -> Outcome:
    """Hold a change to an ASIL-D flag as a change request with its exact before/after."""
    if not rationale or not rationale.strip():
        raise ValidationError(
            {"rationale": "changes to ASIL-D flags need a rationale (hazard analysis or safety-case reference)"}
        )
    before = flag_state(flag)
    # Apply in a savepoint to validate and to see the result, then undo it.
    savepoint = transaction.savepoint()
    try:
        OPERATIONS[operation](flag, payload, actor)
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
        action=FlagAction.REQUEST_CHANGE,
        flag=flag,
        object_type="change_request",
        object_id=request.pk,
        before=before,
        after={"operation": operation, "payload": payload, "proposed": after, "rationale": request.rationale},
        change_request_id=request.pk,
    )
    return Outcome(flag, change_request=request, audit_actions=[FlagAction.REQUEST_CHANGE])


# -- change requests ----------------------------------------------------------------------


def _lock_request(change_request: ChangeRequest | int) -> ChangeRequest:
    pk = change_request.pk if isinstance(change_request, ChangeRequest) else change_request
    found = ChangeRequest.objects.select_for_update().filter(pk=pk).first()
    if found is None:
        raise NotFound(f"no change request {pk}")
    return found


def _check_decidable(request: ChangeRequest, actor: Actor) -> None:
    if request.status != ChangeRequest.Status.PENDING:
        raise Conflict(f"change request {request.pk} is {request.status} already", code=FlagCode.ALREADY_DECIDED)
    if not permissions.can_approve(actor):
        raise PermissionDenied("only SAFETY engineers decide change requests to ASIL-D flags")
    if is_requester(actor, request):
        raise PermissionDenied("the requester cannot decide their own change request: a second person must")
    actor_check_current(actor=actor)  # a key revoked (or user deactivated) since the actor was made


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


def _decide(request: ChangeRequest, actor: Actor, status: str, comment: str) -> None:
    """Record the decision on the locked request (its audit entry is the caller's)."""
    request.status = status
    request.decided_by = actor.user
    request.decided_by_label = actor.label
    request.decided_at = timezone.now()
    request.decision_comment = comment.strip()
    request.save(update_fields=["status", "decided_by", "decided_by_label", "decided_at", "decision_comment"])


def change_request_approve(*, actor: Actor, change_request: ChangeRequest | int, comment: str = "") -> Outcome:
    with transaction.atomic():
        request = _lock_request(change_request)
        _check_decidable(request, actor)
        if request.is_expired:
            raise Conflict(f"change request {request.pk} expired at {request.expires_at:%Y-%m-%d %H:%M} UTC",
                           code=FlagCode.EXPIRED)
        if request.compute_content_hash() != request.content_hash:
            raise Conflict(f"change request {request.pk} was altered after it was submitted", code=FlagCode.TAMPERED)
        flag = lock(request.flag_id)
        if flag.version != request.base_version:
            raise Conflict(
                f"flag {flag.key} changed since the request was made (version {request.base_version} -> "
                f"{flag.version}); make a new request",
                code=FlagCode.STALE,
            )
        if flag.archived_at is not None:
            raise Conflict(f"flag {flag.key} is archived", code=FlagCode.ARCHIVED)
        applied, effects = apply(flag, request.operation, request.payload, actor, change_request_id=request.pk)
        _decide(request, actor, ChangeRequest.Status.APPROVED, comment)
        audit.record(actor=actor, action=FlagAction.APPROVE_CHANGE, flag=applied, object_type="change_request",
                     object_id=request.pk, after={"comment": request.decision_comment, "operation": request.operation},
                     change_request_id=request.pk)
        return Outcome(applied, change_request=None, rule=rule_of(effects),
                       audit_actions=[e.action for e in effects] + [FlagAction.APPROVE_CHANGE])


def change_request_reject(*, actor: Actor, change_request: ChangeRequest | int, reason: str) -> ChangeRequest:
    if not isinstance(reason, str) or not reason.strip():
        raise ValidationError({"reason": "a rejection needs a reason"})
    with transaction.atomic():
        request = _lock_request(change_request)
        _check_decidable(request, actor)
        _decide(request, actor, ChangeRequest.Status.REJECTED, reason)
        audit.record(actor=actor, action=FlagAction.REJECT_CHANGE, flag=request.flag, object_type="change_request",
                     object_id=request.pk, after={"reason": request.decision_comment}, change_request_id=request.pk)
    return request


def change_request_withdraw(*, actor: Actor, change_request: ChangeRequest | int) -> ChangeRequest:
    with transaction.atomic():
        request = _lock_request(change_request)
        if request.status != ChangeRequest.Status.PENDING:
            raise Conflict(f"change request {request.pk} is {request.status} already", code=FlagCode.ALREADY_DECIDED)
        if not is_requester(actor, request):
            raise PermissionDenied("only the requester can withdraw a change request")
        actor_check_current(actor=actor)
        request.status = ChangeRequest.Status.WITHDRAWN
        request.decided_at = timezone.now()
        request.decided_by_label = actor.label
        request.save(update_fields=["status", "decided_at", "decided_by_label"])
        audit.record(actor=actor, action=FlagAction.WITHDRAW_CHANGE, flag=request.flag, object_type="change_request",
                     object_id=request.pk, change_request_id=request.pk)
    return request
