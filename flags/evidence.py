"""The safety evidence report of one flag, for an ISO 26262 assessor.

``build_report(flag)`` gathers, from the database as it is now: the flag's identity and
state, its rules, every audited change in chain order, every change request with its
requester, decider, rationale and decision, the kill-switch history, and the integrity
check of the flag's audit entries (each hash re-computed, each link to its predecessor
compared). The result is plain JSON. ``render_html(report)`` prints it as a page.

Nothing here writes: reading the evidence changes nothing and is not itself audited.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from django.db.models import Count
from django.template.loader import render_to_string
from django.utils import timezone

from audit import services as audit
from audit.models import AuditAnchor, AuditEntry, ChainHead
from flags import actions, diff, selectors, snapshots
from flags.actions import FlagAction
from flags.models import ChangeRequest, Flag, KillSwitchEvent, Rule, SafetyLevel
from flags.operations import flag_fields

REPORT_FORMAT = "fleetflag.safety-evidence/1"
_VALUE_LIMIT = 160

KILL_SWITCH_DELIVERY_NOTE = (
    "Per engagement: the vehicles registered in the flag's environment and those online at that moment "
    "(targeted), the KILL_SWITCH frames the servers wrote to vehicle sockets (re-sends on catch-up included), "
    "and the vehicles that acknowledged the kill switch's version or a later one (each vehicle once)."
)


def _deliveries(flag: Flag) -> list[dict[str, Any]]:
    events = (KillSwitchEvent.objects.filter(flag=flag).annotate(acked=Count("acks"))
              .order_by("engaged_at", "id"))
    return [{"event_id": event.pk, "version": event.version, "environment": event.environment,
             "engaged_at": _iso(event.engaged_at), "engaged_by": event.engaged_by, "reason": event.reason,
             "targeted_vehicles": event.targeted_all, "targeted_online": event.targeted_online, "sent": event.sent,
             "pushed": event.pushed, "acknowledged": event.acked} for event in events]



def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat(timespec="seconds") if value is not None else None


def _show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= _VALUE_LIMIT else text[: _VALUE_LIMIT - 1] + "…"


def _describe(changes: list[dict[str, Any]]) -> str:
    parts = []
    for change in changes:
        if change["before"] is None:
            parts.append(f"{change['field']}: set to {_show(change['after'])}")
        elif change["after"] is None:
            parts.append(f"{change['field']}: removed (was {_show(change['before'])})")
        else:
            parts.append(f"{change['field']}: {_show(change['before'])} → {_show(change['after'])}")
    return "; ".join(parts)


def _kill_engaged(state: Any) -> bool:
    return selectors.is_killed(state.get("rules", []) if isinstance(state, dict) else [])


def _object_label(entry: AuditEntry) -> str:
    return f"{entry.object_type or 'object'} #{entry.object_id}" if entry.object_id else entry.object_type or "object"


def _change(entry: AuditEntry) -> dict[str, Any]:
    """One audit entry as the report lists it: what happened, by whom, what it changed."""
    before, after = entry.before, entry.after
    if entry.action == "REQUEST_CHANGE" and isinstance(after, dict):
        changes = diff.changes(before, after.get("proposed"))
        summary = f"requests {after.get('operation')}: {_describe(changes)}"
    elif entry.action == "APPROVE_CHANGE":
        changes = []
        comment = (after or {}).get("comment") or ""
        summary = f"approved CR-{entry.change_request_id}" + (f": {comment}" if comment else "")
    elif entry.action == "REJECT_CHANGE":
        changes = []
        summary = f"rejected CR-{entry.change_request_id}: {(after or {}).get('reason', '')}"
    elif entry.action == "WITHDRAW_CHANGE":
        changes = []
        summary = f"withdrew CR-{entry.change_request_id}"
    elif entry.action == FlagAction.KILL_SWITCH:
        changes = diff.changes(before, after) if before is not None else []
        reason = ((after or {}).get("conditions") or {}).get("reason", "")
        summary = f"kill switch engaged: {reason}"
    elif before is None and isinstance(after, dict):
        changes = [{"field": name, "before": None, "after": value} for name, value in sorted(after.items())
                   if name not in ("version", "id")]
        shown = ", ".join(f"{change['field']} {_show(change['after'])}" for change in changes)
        summary = f"{_object_label(entry)} created: {shown}"
    elif after is None and isinstance(before, dict):
        changes = [{"field": _object_label(entry), "before": before, "after": None}]
        summary = f"{_object_label(entry)} deleted (was {_show(before)})"
    else:
        prefix = f"{_object_label(entry)}." if entry.object_type == "rule" else ""
        changes = diff.changes(before, after, prefix=prefix)
        summary = _describe(changes) or "no field changed"
    return {
        "seq": entry.seq,
        "time": _iso(entry.created_at),
        "action": entry.action,
        "action_label": actions.label(entry.action),
        "actor": entry.actor,
        "actor_type": entry.actor_type,
        "object": f"{entry.object_type} {entry.object_id}".strip(),
        "change_request_id": entry.change_request_id,
        "summary": summary,
        "changes": changes,
        "ip": entry.ip,
        "request_id": entry.request_id,
        "hash": entry.hash,
    }


def _change_request(request: ChangeRequest, audit_seqs: list[int]) -> dict[str, Any]:
    status = request.display_status
    decided = request.status in (ChangeRequest.Status.APPROVED, ChangeRequest.Status.REJECTED)
    return {
        "id": request.pk,
        "operation": request.operation,
        "operation_label": request.get_operation_display(),
        "status": status,
        "requested_by": request.requested_by_label,
        "requested_at": _iso(request.requested_at),
        "rationale": request.rationale,
        "base_version": request.base_version,
        "expires_at": _iso(request.expires_at),
        "approved_by": request.decided_by_label if request.status == ChangeRequest.Status.APPROVED else None,
        "rejected_by": request.decided_by_label if request.status == ChangeRequest.Status.REJECTED else None,
        "withdrawn_by": request.decided_by_label if request.status == ChangeRequest.Status.WITHDRAWN else None,
        "decided_at": _iso(request.decided_at),
        "decision_comment": request.decision_comment if decided else "",
        "changes": diff.changes(request.before, request.after),
        "summary": _describe(diff.changes(request.before, request.after)),
        "content_hash": request.content_hash,
        "content_intact": request.compute_content_hash() == request.content_hash,
        "audit_seqs": audit_seqs,
    }


def _kill_switch_events(entries: list[AuditEntry], requests: dict[int, ChangeRequest]) -> list[dict[str, Any]]:
    events = []
    for entry in entries:
        request = requests.get(entry.change_request_id) if entry.change_request_id else None
        if entry.action == FlagAction.KILL_SWITCH:
            reason = ((entry.after or {}).get("conditions") or {}).get("reason", "")
            events.append({"event": "engaged", "seq": entry.seq, "time": _iso(entry.created_at),
                           "actor": entry.actor, "reason": reason, "change_request_id": None})
        elif entry.action == FlagAction.LIFT_KILL_SWITCH:
            events.append({
                "event": "lifted", "seq": entry.seq, "time": _iso(entry.created_at), "actor": entry.actor,
                "reason": request.rationale if request is not None else "",
                "requested_by": request.requested_by_label if request is not None else None,
                "change_request_id": entry.change_request_id,
            })
        elif entry.action == "REQUEST_CHANGE" and isinstance(entry.after, dict):
            if _kill_engaged(entry.before) and not _kill_engaged(entry.after.get("proposed")):
                events.append({"event": "lift requested", "seq": entry.seq, "time": _iso(entry.created_at),
                               "actor": entry.actor, "reason": entry.after.get("rationale", ""),
                               "change_request_id": entry.change_request_id})
    return events


def _integrity(entries: list[AuditEntry]) -> dict[str, Any]:
    checks = audit.verify_entries(entries)
    problems = []
    for check in checks:
        if not check["hash_ok"]:
            problems.append({"seq": check["seq"], "problem": "its content does not match its hash"})
        if check["link"] == "broken":
            problems.append({"seq": check["seq"], "problem": "its prev_hash does not match the previous entry"})
        elif check["link"] != "ok":
            problems.append({"seq": check["seq"], "problem": f"link not verifiable: {check['link']}"})
    head = ChainHead.objects.filter(pk=1).first()
    anchor = AuditAnchor.objects.order_by("-seq").first()
    return {
        "method": (
            "For every entry listed: its HMAC-SHA256 (under the audit key named by its key id, a key kept outside "
            "the database) re-computed over its canonical serialisation, which includes its prev_hash, and compared "
            "with its stored MAC; its prev_hash compared with the stored MAC of the entry before it in the chain. "
            "Entries from before the keyed chain are plain SHA-256 and count as intact only within the configured "
            "legacy range."
        ),
        "entries_checked": len(checks),
        "hashes_intact": sum(1 for check in checks if check["hash_ok"]),
        "links_intact": sum(1 for check in checks if check["link"] == "ok"),
        "intact": not problems,
        "problems": problems,
        "chain_head": {"seq": head.seq, "hash": head.hash} if head is not None else None,
        "archive_anchor": {"seq": anchor.seq, "hash": anchor.hash, "archive": anchor.archive_name}
        if anchor is not None else None,
        "whole_chain": "verified separately by `manage.py verify_audit` (daily, see docs/audit.md)",
    }


def build_report(flag: Flag) -> dict[str, Any]:
    """The evidence of one flag, as JSON-serialisable data (see the module docstring)."""
    flag = Flag.objects.select_related("owner_team", "created_by", "updated_by").get(pk=flag.pk)
    rules = list(Rule.objects.filter(flag=flag).order_by("-priority", "id"))
    # Keys are never reused, so the key finds every entry of this flag, archived or not.
    entries = list(AuditEntry.objects.filter(flag_key=flag.key).order_by("seq"))
    requests = list(ChangeRequest.objects.filter(flag=flag).order_by("requested_at", "id"))
    seqs_by_request: dict[int, list[int]] = {}
    for entry in entries:
        if entry.change_request_id is not None:
            seqs_by_request.setdefault(entry.change_request_id, []).append(entry.seq)
    killed = selectors.is_killed(rules)
    if flag.archived_at is not None:
        state = "archived"
    elif killed:
        state = "killed"
    else:
        state = "enabled" if flag.enabled else "disabled"
    kill_events = _kill_switch_events(entries, {request.pk: request for request in requests})
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "generated_at": _iso(timezone.now()),
        "flag": {
            "id": flag.pk,
            **flag_fields(flag),
            "safety_level_label": SafetyLevel(flag.safety_level).label,
            "two_person_rule": flag.safety_level == SafetyLevel.ASIL_D,
            "state": state,
            "kill_switch_engaged": killed,
            "created_at": _iso(flag.created_at),
            "created_by": flag.created_by.get_username() if flag.created_by is not None else None,
            "updated_at": _iso(flag.updated_at),
            "updated_by": flag.updated_by.get_username() if flag.updated_by is not None else None,
            "archived_at": _iso(flag.archived_at),
            "statistics": {
                "total_evaluations": flag.total_evaluations,
                "active_vehicles": flag.active_vehicles,
                "last_evaluation_at": _iso(flag.last_evaluation_at),
            },
        },
        "rules": [{**snapshots.rule_to_dict(rule), "type_label": rule.get_type_display()} for rule in rules],
        "changes": [_change(entry) for entry in entries],
        "change_requests": [_change_request(request, seqs_by_request.get(request.pk, [])) for request in requests],
        "kill_switches": {"engaged": killed, "events": kill_events},
        "kill_switch_delivery": {"tracked": True, "note": KILL_SWITCH_DELIVERY_NOTE, "events": _deliveries(flag)},
        "integrity": _integrity(entries),
    }
    report["summary"] = {
        "changes": len(report["changes"]),
        "change_requests": len(requests),
        "approved": sum(1 for r in requests if r.status == ChangeRequest.Status.APPROVED),
        "rejected": sum(1 for r in requests if r.status == ChangeRequest.Status.REJECTED),
        "pending": sum(1 for r in requests if r.display_status == ChangeRequest.Status.PENDING),
        "kill_switch_engagements": sum(1 for event in kill_events if event["event"] == "engaged"),
        "integrity": "intact" if report["integrity"]["intact"] else "PROBLEMS FOUND",
    }
    report["digest"] = report_digest(report)
    return report


def report_digest(report: dict[str, Any]) -> str:
    """SHA-256 of the report without its digest: a printed copy can be matched to its data."""
    body = {name: value for name, value in report.items() if name != "digest"}
    return hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    ).hexdigest()


def _when(value: str | None) -> str:
    if not value:
        return ""
    return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def render_html(report: dict[str, Any]) -> str:
    """The report as a printable HTML page (``templates/evidence/report.html``)."""
    flag = report["flag"]
    view = {
        "generated": _when(report["generated_at"]),
        "default_value": _show(flag["default_value"]),
        "created": _when(flag["created_at"]),
        "updated": _when(flag["updated_at"]),
        "archived": _when(flag["archived_at"]),
        "last_evaluation": _when(flag["statistics"]["last_evaluation_at"]),
        "rules": [
            {**rule, "conditions_text": _show(rule["conditions"]), "value_text": _show(rule["value"])
             if "value" in rule else ""}
            for rule in report["rules"]
        ],
        "changes": [{**change, "when": _when(change["time"])} for change in report["changes"]],
        "change_requests": [
            {**request, "requested": _when(request["requested_at"]), "decided": _when(request["decided_at"])}
            for request in report["change_requests"]
        ],
        "kill_events": [{**event, "when": _when(event["time"])} for event in report["kill_switches"]["events"]],
    }
    return render_to_string("evidence/report.html", {"report": report, "view": view})
