"""``manage.py export_audit``: CSV and JSON lines, streamed, with filters."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from audit import services
from audit.models import AuditEntry
from core.actors import Actor
from tests.factories import FlagFactory, UserFactory

pytestmark = pytest.mark.django_db

JAN = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)


@pytest.fixture
def trail(monkeypatch: pytest.MonkeyPatch) -> list[AuditEntry]:
    """Four entries: two flags, two actors, three actions, on three days."""
    alice = Actor.for_user(UserFactory(username="alice"), ip="10.1.2.3", user_agent="pytest", request_id="req-1")
    bob = Actor.for_user(UserFactory(username="bob"))
    brakes, seats = FlagFactory(key="brake.blend"), FlagFactory(key="seat.heat")
    entries = []
    for day, actor, flag, action in [
        (0, alice, brakes, "UPDATE_FLAG"),
        (1, bob, brakes, "KILL_SWITCH"),
        (1, alice, seats, "UPDATE_FLAG"),
        (2, bob, seats, "ENABLE_FLAG"),
    ]:
        monkeypatch.setattr(services, "_now", lambda day=day: JAN + timedelta(days=day))
        entries.append(services.record(actor=actor, action=action, flag=flag, before={"enabled": False},
                                       after={"enabled": True, "note": "ü ✓"}))
    return entries


def export(*args: str) -> str:
    out = io.StringIO()
    call_command("export_audit", *args, stdout=out)
    return out.getvalue()


def test_export_jsonl__every_field_and_hash__verifiable(trail: list[AuditEntry]) -> None:
    text = export("--format", "jsonl")
    rows = [json.loads(line) for line in text.splitlines()]
    assert [row["seq"] for row in rows] == [1, 2, 3, 4]
    first = rows[0]
    assert first == {
        "seq": 1, "created_at": "2026-01-10T09:00:00.000000+00:00", "actor_type": "user", "actor": "alice",
        "user_id": trail[0].user_id, "api_key_id": None, "action": "UPDATE_FLAG", "flag_key": "brake.blend",
        "flag_id": trail[0].flag_id, "object_type": "", "object_id": "", "change_request_id": None,
        "before": {"enabled": False}, "after": {"enabled": True, "note": "ü ✓"}, "ip": "10.1.2.3",
        "user_agent": "pytest", "request_id": "req-1", "prev_hash": "0" * 64, "kid": "k1", "hash": trail[0].hash,
    }
    # The export alone proves its integrity.
    report = services.verify_jsonl(text.splitlines(), start_seq=1, start_hash="0" * 64)
    assert (report.ok, report.checked, report.head_hash) == (True, 4, trail[-1].hash)


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("actor", "bob", "its content does not match its MAC (the entry was changed, or made without the key)"),
        ("kid", "", "it carries no MAC, only plain SHA-256, beyond the legacy entries (AUDIT_LEGACY_LAST_SEQ=0, and "
                    "after keyed entries): it was not written by the audit service"),
        ("prev_hash", "f" * 64, "its link to the previous entry is broken"),
    ],
)
def test_verify_jsonl__exported_line_edited__refused(trail: list[AuditEntry], field: str, value: str,
                                                     problem: str) -> None:
    # Given an export whose third line was edited
    rows = [json.loads(line) for line in export("--format", "jsonl").splitlines()]
    rows[2][field] = value
    # When the file is verified on its own
    report = services.verify_jsonl([json.dumps(row) for row in rows], start_seq=1, start_hash="0" * 64)
    # Then the edited entry is named
    assert (report.ok, report.first_broken_seq, report.problem, report.checked) == (False, 3, problem, 2)


def test_export_csv__header_and_rows(trail: list[AuditEntry]) -> None:
    rows = list(csv.DictReader(io.StringIO(export("--format", "csv"))))
    assert list(rows[0]) == list(services.EXPORT_FIELDS)
    assert [(r["seq"], r["actor"], r["action"], r["flag_key"]) for r in rows] == [
        ("1", "alice", "UPDATE_FLAG", "brake.blend"),
        ("2", "bob", "KILL_SWITCH", "brake.blend"),
        ("3", "alice", "UPDATE_FLAG", "seat.heat"),
        ("4", "bob", "ENABLE_FLAG", "seat.heat"),
    ]
    assert json.loads(rows[0]["after"]) == {"enabled": True, "note": "ü ✓"}
    assert rows[0]["hash"] == trail[0].hash


@pytest.mark.parametrize(
    ("arguments", "seqs"),
    [
        (["--flag", "brake.blend"], [1, 2]),
        (["--actor", "alice"], [1, 3]),
        (["--action", "UPDATE_FLAG"], [1, 3]),
        (["--since", "2026-01-11"], [2, 3, 4]),
        (["--until", "2026-01-11"], [1]),
        (["--since", "2026-01-11T00:00:00Z", "--until", "2026-01-12"], [2, 3]),
        (["--since", "2026-01-11T10:00:00+01:00"], [2, 3, 4]),  # 09:00 UTC: inclusive
        (["--flag", "seat.heat", "--actor", "bob", "--action", "ENABLE_FLAG"], [4]),
        (["--flag", "nope"], []),
    ],
)
def test_export__filters(trail: list[AuditEntry], arguments: list[str], seqs: list[int]) -> None:
    text = export("--format", "jsonl", *arguments)
    assert [json.loads(line)["seq"] for line in text.splitlines()] == seqs


def test_export__output_file(trail: list[AuditEntry], tmp_path: Path) -> None:
    target = tmp_path / "audit.csv"
    err = io.StringIO()
    call_command("export_audit", "--format", "csv", "--output", str(target), stdout=io.StringIO(), stderr=err)
    assert target.read_bytes().count(b"\r\n") == 5  # header + 4 rows, CSV line endings kept
    assert f"exported 4 audit entries to {target}" in err.getvalue()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--since", "yesterday"], "not an ISO 8601 date"),
        (["--since", "2026-01-12", "--until", "2026-01-11"], "--until must be after --since"),
    ],
)
def test_export__bad_arguments__command_error(db: None, arguments: list[str], message: str) -> None:
    with pytest.raises(CommandError) as caught:
        export(*arguments)
    assert message in str(caught.value)


@pytest.mark.parametrize("exporter", [services.export_jsonl, services.export_csv])
def test_export__streams_in_chunks_without_caching_the_queryset(trail: list[AuditEntry], exporter) -> None:
    entries = services.filter_entries()
    stream = exporter(entries)
    first = next(stream)
    assert first  # produced before the rest was read
    rest = "".join(stream)
    assert "seat.heat" in first + rest
    assert entries._result_cache is None  # iterated with .iterator(), never loaded whole
