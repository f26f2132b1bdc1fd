"""The safety evidence report: everything an assessor needs about one flag, and nothing invented."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from core.actors import Actor
from flags import evidence, services
from flags.models import Flag
from tests.audit.conftest import triggers_off
from tests.factories import UserFactory, actor

pytestmark = pytest.mark.django_db


@pytest.fixture
def history() -> Flag:
    """An ASIL-D flag's life: created, enable requested and approved, a request rejected,
    killed, lift requested and approved."""
    writer = Actor.for_user(UserFactory(username="dana", role="WRITE"), ip="10.0.0.7", request_id="req-create")
    safety = actor("SAFETY", "sam")
    safety_b = actor("SAFETY", "sue")
    flag = services.flag_create(actor=writer, key="brake.regen", name="Regenerative <braking>", safety_level="ASIL_D",
                                description="Blends regen with friction braking.")
    enable = services.flag_set_enabled(actor=writer, flag=flag, enabled=True, rationale="HARA-17 rev 2").change_request
    services.change_request_approve(actor=safety, change_request=enable, comment="FMEA reviewed")
    ttl = services.flag_update(actor=writer, flag=flag, changes={"ttl_seconds": 60}, rationale="cache churn").change_request
    services.change_request_reject(actor=safety_b, change_request=ttl, reason="TTL below the safety case minimum")
    services.kill_switch_engage(actor=writer, flag=flag, reason="field report FR-88")
    lift = services.kill_switch_lift(actor=writer, flag=flag, rationale="fixed in 3.0.1, SC-9").change_request
    services.change_request_approve(actor=safety_b, change_request=lift, comment="verified on HIL")
    return flag


def test_build_report__identity_state_and_json_serialisable(history: Flag) -> None:
    report = evidence.build_report(history)
    assert json.loads(json.dumps(report)) == report
    flag = report["flag"]
    assert {k: flag[k] for k in ("key", "name", "safety_level", "safety_level_label", "two_person_rule", "state",
                                 "enabled", "kill_switch_engaged", "version", "created_by")} == {
        "key": "brake.regen", "name": "Regenerative <braking>", "safety_level": "ASIL_D",
        "safety_level_label": "ASIL-D", "two_person_rule": True, "state": "enabled", "enabled": True,
        "kill_switch_engaged": False, "version": 4, "created_by": "dana",
    }
    assert [rule["type"] for rule in report["rules"]] == ["kill_switch"]
    assert report["digest"] == evidence.report_digest(report)


def test_build_report__every_change_in_chain_order(history: Flag) -> None:
    changes = evidence.build_report(history)["changes"]
    assert [(c["action"], c["actor"]) for c in changes] == [
        ("CREATE_FLAG", "dana"),
        ("REQUEST_CHANGE", "dana"),
        ("ENABLE_FLAG", "sam"),
        ("APPROVE_CHANGE", "sam"),
        ("REQUEST_CHANGE", "dana"),
        ("REJECT_CHANGE", "sue"),
        ("KILL_SWITCH", "dana"),
        ("REQUEST_CHANGE", "dana"),
        ("LIFT_KILL_SWITCH", "sue"),
        ("APPROVE_CHANGE", "sue"),
    ]
    seqs = [c["seq"] for c in changes]
    assert seqs == sorted(seqs)
    enable_request, enabled = changes[1], changes[2]
    assert enable_request["summary"] == "requests enable_flag: enabled: false → true"
    assert enabled["changes"] == [{"field": "enabled", "before": False, "after": True}]
    assert enabled["change_request_id"] == enable_request["change_request_id"] is not None
    assert changes[0]["ip"] == "10.0.0.7" and changes[0]["request_id"] == "req-create"
    assert changes[5]["summary"].endswith("TTL below the safety case minimum")
    assert changes[6]["summary"] == "kill switch engaged: field report FR-88"


def test_build_report__change_requests_with_people_reasons_and_decisions(history: Flag) -> None:
    requests = evidence.build_report(history)["change_requests"]
    assert [(r["operation"], r["status"], r["requested_by"], r["approved_by"], r["rejected_by"], r["base_version"])
            for r in requests] == [
        ("enable_flag", "approved", "dana", "sam", None, 1),
        ("update_flag", "rejected", "dana", None, "sue", 2),
        ("lift_kill_switch", "approved", "dana", "sue", None, 3),
    ]
    enable, ttl, lift = requests
    assert (enable["rationale"], enable["decision_comment"]) == ("HARA-17 rev 2", "FMEA reviewed")
    assert (ttl["rationale"], ttl["decision_comment"]) == ("cache churn", "TTL below the safety case minimum")
    assert lift["decision_comment"] == "verified on HIL"
    assert all(r["requested_at"] and r["decided_at"] and r["content_intact"] for r in requests)
    assert ttl["summary"] == "ttl_seconds: 604800 → 60"
    assert len(enable["audit_seqs"]) == 3  # requested, applied, approved


def test_build_report__kill_switch_history_and_its_recorded_delivery(history: Flag) -> None:
    report = evidence.build_report(history)
    events = [(e["event"], e["actor"], e["reason"]) for e in report["kill_switches"]["events"]]
    assert events == [
        ("engaged", "dana", "field report FR-88"),
        ("lift requested", "dana", "fixed in 3.0.1, SC-9"),
        ("lifted", "sue", "fixed in 3.0.1, SC-9"),
    ]
    assert report["kill_switches"]["events"][2]["requested_by"] == "dana"
    delivery = report["kill_switch_delivery"]
    assert delivery["tracked"] is True
    # One engagement, as recorded at the time: nobody was connected, nothing sent or acknowledged
    assert [(d["engaged_by"], d["reason"], d["sent"], d["acknowledged"]) for d in delivery["events"]] == [
        ("dana", "field report FR-88", 0, 0)]


def test_build_report__integrity_intact(history: Flag) -> None:
    integrity = evidence.build_report(history)["integrity"]
    assert (integrity["intact"], integrity["entries_checked"], integrity["hashes_intact"],
            integrity["links_intact"], integrity["problems"]) == (True, 10, 10, 10, [])


def test_build_report__tampered_entry__named_as_problem(history: Flag) -> None:
    target = evidence.build_report(history)["changes"][2]["seq"]
    with triggers_off() as cursor:
        cursor.execute("UPDATE audit_auditentry SET actor = 'mallory' WHERE seq = %s", [target])
    integrity = evidence.build_report(history)["integrity"]
    assert integrity["intact"] is False
    assert {"seq": target, "problem": "its content does not match its hash"} in integrity["problems"]


def test_render_html__printable_sections_escaped(history: Flag) -> None:
    page = evidence.render_html(evidence.build_report(history))
    for heading in ("1. Flag identity and current state", "2. Change requests", "3. Kill switch",
                    "4. Change history", "5. Integrity of the audit trail", "Kill-switch delivery to vehicles"):
        assert heading in page
    assert "Regenerative &lt;braking&gt;" in page and "<braking>" not in page
    assert "@media print" in page
    assert "HARA-17 rev 2" in page and "verified on HIL" in page


def test_safety_evidence_command__json_to_stdout(history: Flag) -> None:
    out = io.StringIO()
    call_command("safety_evidence", "brake.regen", stdout=out)
    report = json.loads(out.getvalue())
    assert report["flag"]["key"] == "brake.regen"
    assert report["format"] == evidence.REPORT_FORMAT


def test_safety_evidence_command__html_to_file(history: Flag, tmp_path: Path) -> None:
    target = tmp_path / "evidence.html"
    call_command("safety_evidence", "brake.regen", "--format", "html", "--output", str(target),
                 stdout=io.StringIO(), stderr=io.StringIO())
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_safety_evidence_command__unknown_key__command_error(db: None) -> None:
    with pytest.raises(CommandError) as caught:
        call_command("safety_evidence", "no.such-flag")
    assert "no flag with key 'no.such-flag'" in str(caught.value)


def test_build_report__archived_flag_still_reported(history: Flag) -> None:
    plain = services.flag_create(actor=actor("WRITE", "w2"), key="seat.cool", name="Seat cooling")
    services.flag_archive(actor=actor("WRITE", "w2"), flag=plain)
    report = evidence.build_report(plain)
    assert report["flag"]["state"] == "archived" and report["flag"]["two_person_rule"] is False
    assert [c["action"] for c in report["changes"]] == ["CREATE_FLAG", "ARCHIVE_FLAG"]
    assert report["change_requests"] == []
