"""Reads of flags, rules and change requests that more than one interface needs.

The evaluation input (``evaluation_input`` / ``aevaluation_input``) is built here once:
evaluate, evaluate/batch, OFREP and the admin's preview all take the VIN, the caller's
context and the environment through it, so they answer alike for the same question.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Exists, OuterRef, Prefetch, QuerySet
from django.utils import timezone

from audit.models import AuditEntry
from core.errors import NotFound
from flags.actions import FlagAction
from flags.models import ChangeRequest, Environment, Flag, KillSwitchAck, KillSwitchEvent, Rule, RuleType
from vehicles import selectors as vehicles
from vehicles.models import Vehicle

ENVIRONMENTS = frozenset(Environment.values)
DEFAULT_ENVIRONMENT = Environment.PRODUCTION.value


# -- flags -------------------------------------------------------------------------------------


def flags_with_rules() -> QuerySet[Flag]:
    return Flag.objects.select_related("owner_team").prefetch_related(
        Prefetch("rules", queryset=Rule.objects.order_by("-priority", "id"))
    )


def get_flag(key: str) -> Flag:
    flag = flags_with_rules().filter(key=key).first()
    if flag is None:
        raise NotFound(f"no flag {key}")
    return flag


# -- kill switches -------------------------------------------------------------------------------


def engaged_kill_switches(flag: Flag | int) -> QuerySet[Rule]:
    """The flag's engaged kill-switch rules (at most one in practice), oldest first."""
    return Rule.objects.filter(flag=flag, type=RuleType.KILL_SWITCH, enabled=True).order_by("id")


def killed_subquery() -> Exists:
    """Annotate a Flag queryset: ``.annotate(killed=killed_subquery())``."""
    return Exists(Rule.objects.filter(flag=OuterRef("pk"), type=RuleType.KILL_SWITCH, enabled=True))


def is_killed(rules: Iterable[Rule | Mapping[str, Any]]) -> bool:
    """Whether rules already in memory (prefetched rows, or rule dicts of a state or snapshot)
    hold an engaged kill switch."""
    for rule in rules:
        if isinstance(rule, Rule):
            if rule.type == RuleType.KILL_SWITCH and rule.enabled:
                return True
        elif rule.get("type") == RuleType.KILL_SWITCH and rule.get("enabled"):
            return True
    return False


ACK_PAGE_LIMIT = 1000


def last_kill_switch_event(flag: Flag) -> KillSwitchEvent | None:
    return KillSwitchEvent.objects.filter(flag=flag).order_by("-engaged_at", "-id").first()


def kill_switch_delivery(event: KillSwitchEvent | None, *, ack_offset: int = 0, ack_limit: int = 100,
                         environment: str = "") -> dict[str, Any]:
    """The delivery proof of one kill-switch event: targeted (all, online at the engage), frames
    sent by the server processes, acknowledgements (count, and a page of them per vehicle)."""
    if event is None:
        return {"event_id": None, "version": None, "environment": environment, "engaged_at": None, "reason": None,
                "targeted_vehicles": Vehicle.objects.filter(environment=environment).count(),
                "targeted_online": None, "sent": 0, "pushed": False, "acknowledged": 0,
                "acks": {"count": 0, "offset": 0, "limit": ack_limit, "results": []}}
    acks = KillSwitchAck.objects.filter(event=event).order_by("acked_at", "vehicle_id")
    count = acks.count()
    limit = max(1, min(int(ack_limit), ACK_PAGE_LIMIT))
    offset = max(0, int(ack_offset))
    page = [{"vin": vin, "acked_at": at, "version": version}
            for vin, at, version in acks.values_list("vehicle_id", "acked_at", "version")[offset:offset + limit]]
    return {"event_id": event.pk, "version": event.version, "environment": event.environment,
            "engaged_at": event.engaged_at, "reason": event.reason, "targeted_vehicles": event.targeted_all,
            "targeted_online": event.targeted_online, "sent": event.sent, "pushed": event.pushed,
            "acknowledged": count, "acks": {"count": count, "offset": offset, "limit": limit, "results": page}}


def kill_switch_state(flag: Flag, *, ack_offset: int = 0, ack_limit: int = 100) -> dict[str, Any]:
    """Engaged or not, why, since when and by whom, and the delivery of the last engagement."""
    rule = engaged_kill_switches(flag).first()
    engaged_at = engaged_by = None
    if rule is not None:
        entry = (AuditEntry.objects.filter(flag_id=flag.pk, action=FlagAction.KILL_SWITCH, object_id=str(rule.pk))
                 .order_by("-seq").first())
        engaged_at = entry.created_at if entry is not None else rule.updated_at
        engaged_by = entry.actor if entry is not None else None
    return {
        "flag_key": flag.key,
        "engaged": rule is not None,
        "reason": (rule.conditions or {}).get("reason") if rule is not None else None,
        "rule_id": rule.pk if rule is not None else None,
        "engaged_at": engaged_at,
        "engaged_by": engaged_by,
        "flag_version": flag.version,
        "delivery": kill_switch_delivery(last_kill_switch_event(flag), ack_offset=ack_offset, ack_limit=ack_limit,
                                         environment=flag.environment),
    }


# -- change requests -------------------------------------------------------------------------------


def open_requests(requests: QuerySet[ChangeRequest] | None = None) -> QuerySet[ChangeRequest]:
    """Pending and not yet expired: waiting for a decision."""
    requests = ChangeRequest.objects.all() if requests is None else requests
    return requests.filter(status=ChangeRequest.Status.PENDING, expires_at__gt=timezone.now())


def expired_requests(requests: QuerySet[ChangeRequest] | None = None) -> QuerySet[ChangeRequest]:
    """Pending past their expiry: they can no longer be approved."""
    requests = ChangeRequest.objects.all() if requests is None else requests
    return requests.filter(status=ChangeRequest.Status.PENDING, expires_at__lte=timezone.now())


# -- the evaluation input ------------------------------------------------------------------------


@dataclass(frozen=True)
class EvaluationInput:
    """What a flag is evaluated with: the VIN, the environment whose snapshot applies, and
    the full context. ``filled`` names what came from the registry."""

    vin: str
    environment: str
    context: dict[str, Any]
    registered: bool
    filled: dict[str, Any] = field(default_factory=dict)


def evaluation_input(vin: str, context: Mapping[str, Any], environment: str | None,
                     registered: Mapping[str, Any] | None) -> EvaluationInput:
    """The one rule for every evaluation path.

    A registered vehicle is evaluated in its own environment, and its registry attributes
    (model, sw_version, region) fill every attribute the caller left out **or sent as
    null**: null means "not known", which is what the registry is there to answer. An
    unregistered VIN is evaluated with the context as given, in the requested environment
    (production by default).
    """
    given = dict(context)
    if registered is None:
        return EvaluationInput(vin, environment or DEFAULT_ENVIRONMENT, given, False)
    attributes = {name: value for name, value in registered.items() if name != "environment"}
    filled = {name: value for name, value in attributes.items() if given.get(name) is None}
    return EvaluationInput(vin, str(registered["environment"]), {**given, **filled} if filled else given, True,
                           filled)


def resolve_input(vin: str, context: Mapping[str, Any], environment: str | None = None) -> EvaluationInput:
    """``evaluation_input`` with the registry read now (sync callers: OFREP, the admin)."""
    return evaluation_input(vin, context, environment, vehicles.targeting(vin))


async def aresolve_input(vin: str, context: Mapping[str, Any], environment: str | None = None) -> EvaluationInput:
    """``evaluation_input`` for async views: caches first, the database only on a miss."""
    return evaluation_input(vin, context, environment, await vehicles.atargeting(vin))


# -- metrics -----------------------------------------------------------------------------------------


def gauges() -> list[tuple[str, str, list[tuple[dict[str, Any], float]]]]:
    """(name, help, samples) of the flag gauges ``/metrics`` shows, read now."""
    from django.db.models import Count

    from flags.models import SafetyLevel

    by_level = dict(Flag.objects.filter(archived_at__isnull=True).values_list("safety_level")
                    .annotate(n=Count("id")).values_list("safety_level", "n"))
    return [
        ("fleetflag_flags", "Flags (not archived) by safety level.",
         [({"safety_level": level}, by_level.get(level, 0)) for level in SafetyLevel.values]),
        ("fleetflag_change_requests_pending", "ASIL-D change requests waiting for approval.",
         [({}, open_requests().count())]),
    ]
