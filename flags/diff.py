"""What a change changes: the one before/after diff of two flag states.

Both readers of a change use it: the admin's change-request page (``change_request_diff``:
flag fields side by side, rules added, removed and changed, JSON values line by line) and
the evidence report (``changes``: a flat list of field, before, after). Rules are matched
by id in both (``match_rules``).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

RULE_DISPLAY_FIELDS = ("type", "priority", "enabled", "conditions", "value", "variant")


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, cls=DjangoJSONEncoder)


def match_rules(before: list[dict[str, Any]], after: list[dict[str, Any]]
                ) -> list[tuple[str, Any, dict[str, Any] | None, dict[str, Any] | None]]:
    """(kind, rule id, old, new) per rule, by id ascending; kind: added, removed, changed, unchanged."""
    old = {rule.get("id"): rule for rule in before}
    new = {rule.get("id"): rule for rule in after}
    out: list[tuple[str, Any, dict[str, Any] | None, dict[str, Any] | None]] = []
    for rule_id in sorted(set(old) | set(new), key=lambda value: (value is None, value or 0)):
        if rule_id not in new:
            out.append(("removed", rule_id, old[rule_id], None))
        elif rule_id not in old:
            out.append(("added", rule_id, None, new[rule_id]))
        else:
            out.append(("changed" if old[rule_id] != new[rule_id] else "unchanged", rule_id, old[rule_id],
                        new[rule_id]))
    return out


# -- the flat form (evidence) ----------------------------------------------------------------------


def changes(before: Any, after: Any, prefix: str = "") -> list[dict[str, Any]]:
    """Field by field what differs between two states (rules matched by id)."""
    if not isinstance(before, dict) or not isinstance(after, dict):
        return [] if before == after else [{"field": prefix or "value", "before": before, "after": after}]
    out: list[dict[str, Any]] = []
    for name in sorted(set(before) | set(after)):
        if name == "version":  # bumped by every change; the diff says what the change was
            continue
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        if name == "rules" and isinstance(old, list) and isinstance(new, list):
            for kind, rule_id, old_rule, new_rule in match_rules(old, new):
                label = f"rule #{rule_id}" if rule_id is not None else "new rule"
                if kind in ("added", "removed"):
                    out.append({"field": label, "before": old_rule, "after": new_rule})
                elif kind == "changed":
                    out.extend(changes(old_rule, new_rule, prefix=f"{label}."))
        else:
            out.append({"field": f"{prefix}{name}", "before": old, "after": new})
    return out


# -- the side-by-side form (the admin's change-request page) --------------------------------------------


@dataclass
class FieldChange:
    name: str
    before: Any
    after: Any
    changed: bool
    lines: list[tuple[str, str]] | None = None  # a line diff for JSON objects and lists
    present_before: bool = True  # false on the side of an added or removed rule
    present_after: bool = True

    @property
    def before_text(self) -> str:
        return _display(self.before) if self.present_before else "-"

    @property
    def after_text(self) -> str:
        return _display(self.after) if self.present_after else "-"


@dataclass
class RuleChange:
    kind: str  # added | removed | changed | unchanged
    rule_id: Any
    title: str
    fields: list[FieldChange]


def _display(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return pretty(value)
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value


def line_diff(before: Any, after: Any) -> list[tuple[str, str]]:
    """Pretty JSON of both, line by line: ("same"|"del"|"add", text)."""
    old = pretty(before).splitlines() if before is not None else []
    new = pretty(after).splitlines() if after is not None else []
    lines: list[tuple[str, str]] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        if tag == "equal":
            lines.extend(("same", "  " + line) for line in old[i1:i2])
            continue
        lines.extend(("del", "- " + line) for line in old[i1:i2])
        lines.extend(("add", "+ " + line) for line in new[j1:j2])
    return lines


def _field_changes(
    before: dict[str, Any], after: dict[str, Any], names: Iterable[str], *, present_before: bool = True,
    present_after: bool = True,
) -> list[FieldChange]:
    changes = []
    for name in names:
        old, new = before.get(name), after.get(name)
        changed = old != new
        lines = line_diff(old, new) if changed and isinstance(old or new, (dict, list)) else None
        changes.append(FieldChange(name, old, new, changed, lines, present_before, present_after))
    return changes


RULE_DISPLAY_FIELDS = ("type", "priority", "enabled", "conditions", "value", "variant")


def change_request_diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Flag fields side by side, and rules added, removed and changed (matched by id)."""
    flag_names = [name for name in before if name not in ("rules", "version")]
    rules: list[RuleChange] = []
    for kind, rule_id, old, new in match_rules(before.get("rules", []), after.get("rules", [])):
        shown = new if new is not None else old or {}
        title = f"{shown.get('type')} (priority {shown.get('priority')})"
        fields = _field_changes(old or {}, new or {}, RULE_DISPLAY_FIELDS, present_before=old is not None,
                                present_after=new is not None)
        rules.append(RuleChange(kind, rule_id, title, fields))
    order = {"removed": 0, "changed": 1, "added": 2, "unchanged": 3}
    rules.sort(key=lambda change: order[change.kind])
    fields = _field_changes(before, after, flag_names)
    return {
        "fields": fields,
        "changed_fields": [change for change in fields if change.changed],
        "rules": [change for change in rules if change.kind != "unchanged"],
        "unchanged_rules": [change for change in rules if change.kind == "unchanged"],
    }

