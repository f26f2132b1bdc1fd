"""Signed checkpoints of the chain head, kept outside the database: ``audit_checkpoint`` writes
them, ``verify_audit --checkpoint`` proves against them that history up to each was not
rewritten or shortened, and refuses a checkpoint file that was tampered with."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from audit import services
from audit.models import AuditEntry, ChainHead
from tests.audit.conftest import KEY_1, KEY_2, WRONG_KEY, append, sha256_of, triggers_off, update_entry, use_keys

pytestmark = pytest.mark.django_db

T1 = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)


def checkpoint(path: Path) -> str:
    out = io.StringIO()
    call_command("audit_checkpoint", "--out", str(path), stdout=out, stderr=io.StringIO())
    return out.getvalue()


def checkpoint_refused(path: Path) -> CommandError:
    with pytest.raises(CommandError) as caught:
        checkpoint(path)
    return caught.value


def verify_with(path: Path) -> str:
    out = io.StringIO()
    call_command("verify_audit", "--checkpoint", str(path), stdout=out, stderr=io.StringIO())
    return out.getvalue()


def verify_refused(path: Path) -> CommandError:
    with pytest.raises(CommandError) as caught:
        verify_with(path)
    assert caught.value.returncode == 1
    return caught.value


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def at(path: Path, line: int) -> str:
    """When the checkpoint on ``line`` (1-based) was taken."""
    return str(lines_of(path)[line - 1]["at"])


def write_lines(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(row, sort_keys=True, separators=(",", ":")) + "\n" for row in rows))


def signed(row: dict[str, Any], key: str) -> dict[str, Any]:
    """A line as docs/audit.md defines it, computed here independently of the service."""
    fields = {name: row[name] for name in ("v", "seq", "hash", "entry_kid", "at", "kid", "prev")}
    payload = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    mac = hmac.new(key.encode(), b"fleetflag.audit.checkpoint.v1\x00" + payload, hashlib.sha256).hexdigest()
    return {**fields, "mac": mac}


@pytest.fixture
def checkpoints(db: None, tmp_path: Path) -> Path:
    """Checkpoints at #3 and #5; the chain is at #5."""
    path = tmp_path / "audit-checkpoints.jsonl"
    append(3)
    checkpoint(path)
    append(2)
    checkpoint(path)
    return path


def test_audit_checkpoint__intact_chain__signed_line_appended(
    db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a chain of three entries, at a fixed time
    monkeypatch.setattr(services, "_now", lambda: T1)
    path = tmp_path / "sub" / "checkpoints.jsonl"
    entries = append(3)
    # When checkpointed twice, with an entry between
    first_out = checkpoint(path)
    fourth = append(1)[0]
    checkpoint(path)
    # Then each line names the head, the time and the key, MACed with the audit key, and the
    # second carries the first's MAC
    first, second = lines_of(path)
    expected_first = signed({"v": 1, "seq": 3, "hash": entries[2].hash, "entry_kid": "k1",
                             "at": "2026-11-02T03:00:00.000000+00:00", "kid": "k1", "prev": ""}, KEY_1)
    assert first == expected_first
    assert second == signed({"v": 1, "seq": 4, "hash": fourth.hash, "entry_kid": "k1",
                             "at": "2026-11-02T03:00:00.000000+00:00", "kid": "k1", "prev": first["mac"]}, KEY_1)
    assert first_out == (f"checkpoint #3 {entries[2].hash[:16]} (k1) at 2026-11-02T03:00:00.000000+00:00 appended "
                         f"to {path}\n")


def test_verify_audit__checkpoints_intact__each_reported_with_uncovered_tail(checkpoints: Path) -> None:
    assert verify_with(checkpoints).splitlines()[1] == (
        f"{checkpoints}: 2 checkpoints intact; the latest, #5 of {at(checkpoints, 2)}, is still in the chain; no "
        "entries after it")
    append(2)
    assert verify_with(checkpoints).splitlines()[1].endswith("is still in the chain; entries #6 to #7 are covered by "
                                                            "no checkpoint yet")


def test_verify_audit__empty_checkpoint_file__no_checkpoints_yet(db: None, tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    assert verify_with(path).splitlines()[1] == f"{path}: no checkpoints yet"


def test_verify_audit__checkpoint_file_missing__exit_2(db: None, tmp_path: Path) -> None:
    with pytest.raises(CommandError) as caught:
        verify_with(tmp_path / "absent.jsonl")
    assert caught.value.returncode == 2


def _tamper(rows: list[dict[str, Any]], how: str) -> list[dict[str, Any]]:
    first, second = rows
    if how == "seq lowered":
        return [{**first, "seq": 2}, second]
    if how == "hash replaced":
        return [first, {**second, "hash": "a" * 64}]
    if how == "time moved":
        return [{**first, "at": "2026-01-01T00:00:00.000000+00:00"}, second]
    if how == "mac replaced":
        return [first, {**second, "mac": "0" * 64}]
    if how == "re-signed with a wrong key":
        return [signed({**first, "seq": 1}, WRONG_KEY), second]
    if how == "first line removed":
        return [second]
    if how == "lines swapped":
        return [second, first]
    if how == "line added after, chained but wrong key":
        return [first, second, signed({**second, "seq": 9, "prev": second["mac"]}, WRONG_KEY)]
    if how == "field added":
        return [first, {**second, "note": "x"}]
    raise AssertionError(how)


TAMPERING = {
    "seq lowered": "line 1: its MAC does not match (the line was altered or forged)",
    "hash replaced": "line 2: its MAC does not match (the line was altered or forged)",
    "time moved": "line 1: its MAC does not match (the line was altered or forged)",
    "mac replaced": "line 2: its MAC does not match (the line was altered or forged)",
    "re-signed with a wrong key": "line 1: its MAC does not match (the line was altered or forged)",
    "first line removed": "line 1: it does not follow the line before it (a line was removed, reordered or inserted)",
    "lines swapped": "line 1: it does not follow the line before it (a line was removed, reordered or inserted)",
    "line added after, chained but wrong key": "line 3: its MAC does not match (the line was altered or forged)",
    "field added": "line 2 is not an audit checkpoint (unknown version or fields)",
}


@pytest.mark.parametrize("how", list(TAMPERING))
def test_checkpoint_file__tampered__verify_and_new_checkpoint_refused(checkpoints: Path, how: str) -> None:
    # Given the checkpoint file edited
    write_lines(checkpoints, _tamper(lines_of(checkpoints), how))
    tampered = checkpoints.read_text()
    # When verified, and when the next checkpoint would be appended
    verify_error = verify_refused(checkpoints)
    append_error = checkpoint_refused(checkpoints)
    # Then both refuse, naming the line, and the file is left as it was
    assert str(verify_error) == f"{checkpoints}: {TAMPERING[how]}"
    assert str(append_error) == f"{checkpoints}: {TAMPERING[how]}"
    assert checkpoints.read_text() == tampered


def test_checkpoint_file__not_json__refused(checkpoints: Path) -> None:
    checkpoints.write_text(checkpoints.read_text() + "{not json\n")
    assert str(verify_refused(checkpoints)).startswith(f"{checkpoints}: line 3 is not an audit checkpoint (")


def test_checkpoint_file__key_removed__refused(settings: Any, checkpoints: Path) -> None:
    # Given the key that signed the checkpoints rotated away and dropped
    use_keys(settings, "k2", k2=KEY_2)
    # Then the checkpoints cannot be checked, and that is a failure, not a pass
    error = verify_refused(checkpoints)
    assert f"{checkpoints}: line 1: its key id 'k1' is not configured" in str(error)


def test_checkpoint_file__after_rotation__old_lines_verify_new_lines_new_kid(settings: Any, checkpoints: Path) -> None:
    use_keys(settings, "k2", k2=KEY_2, k1=KEY_1)
    append(1)
    checkpoint(checkpoints)
    assert [row["kid"] for row in lines_of(checkpoints)] == ["k1", "k1", "k2"]
    assert "3 checkpoints intact" in verify_with(checkpoints)


def test_checkpoint__history_rewritten_by_key_holder__chain_passes_checkpoint_refuses(checkpoints: Path) -> None:
    # Given someone with the key and the database: #4 rewritten, #4..#5 re-MACed, the head too
    entries = list(AuditEntry.objects.filter(seq__gte=4).order_by("seq"))
    entries[0].actor = "system:someone-else"
    with triggers_off() as cursor:
        previous = AuditEntry.objects.get(seq=3).hash
        for entry in entries:
            entry.prev_hash = previous
            entry.hash = entry.compute_hash() or ""
            update_entry(cursor, entry.seq, actor=entry.actor, prev_hash=entry.prev_hash, hash=entry.hash)
            previous = entry.hash
        head = ChainHead(pk=1, seq=5, hash=previous, kid="k1")
        cursor.execute("UPDATE audit_chainhead SET hash = %s, mac = %s WHERE id = 1", [head.hash, head.compute_mac()])
    # When verified
    chain = services.verify_chain()
    error = verify_refused(checkpoints)
    # Then the chain alone cannot tell, the checkpoint at #5 can
    assert chain.ok, chain.problem
    assert str(error) == (f"{checkpoints}: entry #5 is not the one of checkpoint 2 (#5 at {at(checkpoints, 2)}): it "
                          "or history before it was rewritten")


def test_checkpoint__rewrite_without_key_behind_triggers__verify_and_checkpoint_refuse(checkpoints: Path) -> None:
    # Given a superuser (triggers off, no key) rewriting #2 and re-hashing #2..#5 and the head
    # the documented SHA-256 way
    entries = list(AuditEntry.objects.filter(seq__gte=2).order_by("seq"))
    entries[0].actor = "system:someone-else"
    with triggers_off() as cursor:
        previous = AuditEntry.objects.get(seq=1).hash
        for entry in entries:
            entry.prev_hash = previous
            entry.hash = sha256_of(entry)
            update_entry(cursor, entry.seq, actor=entry.actor, prev_hash=entry.prev_hash, hash=entry.hash)
            previous = entry.hash
        cursor.execute("UPDATE audit_chainhead SET hash = %s WHERE id = 1", [previous])
    # When verified
    error = str(verify_refused(checkpoints))
    # Then the chain fails at #2 and the checkpoints name the rewritten entries
    assert error.splitlines() == [
        "audit chain BROKEN at entry #2: its content does not match its MAC (the entry was changed, or made without "
        "the key) (1 entries verified before it)",
        f"{checkpoints}: entry #3 is not the one of checkpoint 1 (#3 at {at(checkpoints, 1)}): it or history before "
        "it was rewritten",
    ]


def _saved_head() -> tuple[int, str, str, str]:
    """What an insider with SELECT on the head can keep from an earlier moment."""
    head = ChainHead.objects.get(pk=1)
    return head.seq, head.hash, head.kid, head.mac


def _cut_tail_and_restore_head(after_seq: int, saved: tuple[int, str, str, str]) -> None:
    with triggers_off() as cursor:
        cursor.execute("DELETE FROM audit_auditentry WHERE seq > %s", [after_seq])
        cursor.execute("UPDATE audit_chainhead SET seq = %s, hash = %s, kid = %s, mac = %s WHERE id = 1", list(saved))


def test_checkpoint__tail_cut_below_checkpoint_with_replayed_head__chain_passes_checkpoint_refuses(
    db: None, tmp_path: Path
) -> None:
    # Given the head saved by an insider at #3, then a checkpoint at #5
    path = tmp_path / "checkpoints.jsonl"
    append(3)
    saved = _saved_head()
    append(2)
    checkpoint(path)
    # When a superuser removes #4 and #5 and puts the saved head back
    _cut_tail_and_restore_head(3, saved)
    chain = services.verify_chain()
    error = verify_refused(path)
    append_error = checkpoint_refused(path)
    # Then the chain alone looks intact (every MAC is genuine), the checkpoint says it was shortened
    assert (chain.ok, chain.last_seq) == (True, 3)
    expected = (f"{path}: the chain head is at #3 but checkpoint 1 (#5 at {at(path, 1)}) saw the chain reach #5: "
                "the chain was shortened")
    assert str(error) == expected
    assert str(append_error) == expected
    assert len(lines_of(path)) == 1


def test_checkpoint__tail_after_last_checkpoint_cut_with_replayed_head__not_detected(
    db: None, tmp_path: Path
) -> None:
    # The limit docs/audit.md states: what came after the last checkpoint held outside can be
    # cut by a superuser who kept an earlier head row. Given a checkpoint at #3, the head saved at #4
    path = tmp_path / "checkpoints.jsonl"
    append(3)
    checkpoint(path)
    append(1)
    saved = _saved_head()
    append(1)
    # When #5 is removed and the head at #4 put back
    _cut_tail_and_restore_head(4, saved)
    # Then neither the chain nor the checkpoint can tell
    assert services.verify_chain().ok
    assert verify_with(path).splitlines()[1].endswith("entry #4 is covered by no checkpoint yet")


def test_audit_checkpoint__broken_chain__refused_no_file(chain: list[AuditEntry], tmp_path: Path) -> None:
    with triggers_off() as cursor:
        update_entry(cursor, 2, actor="x")
    error = checkpoint_refused(tmp_path / "cp.jsonl")
    assert error.returncode == 1
    assert "no checkpoint written: audit chain BROKEN at entry #2" in str(error)
    assert not (tmp_path / "cp.jsonl").exists()


def test_audit_checkpoint__development_key__note_on_stderr(settings: Any, db: None, tmp_path: Path) -> None:
    from fleetflag.settings.base import AUDIT_HMAC_DEV_KEY

    settings.AUDIT_HMAC_KID, settings.AUDIT_HMAC_KEYS = "dev", {"dev": AUDIT_HMAC_DEV_KEY}
    settings.AUDIT_HMAC_DEV_KEY_IN_USE = True
    err = io.StringIO()
    call_command("audit_checkpoint", "--out", str(tmp_path / "cp.jsonl"), stdout=io.StringIO(), stderr=err)
    assert err.getvalue().startswith("note: the audit key is the embedded development key")
    assert lines_of(tmp_path / "cp.jsonl")[0]["kid"] == "dev"


def test_checkpoint__archived_month__counted_against_its_anchor(
    require_postgres: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given three entries of January 2018 checkpointed, two entries now checkpointed, and
    # January 2018 archived
    path = tmp_path / "checkpoints.jsonl"
    services.partition_create(date(2018, 1, 1))
    real_now = services._now
    monkeypatch.setattr(services, "_now", lambda: datetime(2018, 1, 15, tzinfo=UTC))
    append(3)
    monkeypatch.setattr(services, "_now", real_now)
    checkpoint(path)
    append(2)
    checkpoint(path)
    anchor = services.partition_archive(month=date(2018, 1, 1), output=tmp_path / "2018-01.jsonl", actor="test")
    # Then the anchor is MACed, and the checkpoint at #3 is checked against it
    assert anchor is not None and (anchor.seq, anchor.kid) == (3, "k1")
    assert services.anchor_problem(anchor) is None
    assert f"{path}: 2 checkpoints intact (1 before the archive anchor)" in verify_with(path)
    assert connection.vendor == "postgresql"


def test_checkpoint__everything_emptied_with_head__chain_passes_checkpoint_refuses(checkpoints: Path) -> None:
    # Given a superuser deleting every entry and the head (an empty chain is indistinguishable
    # from a fresh one)
    with triggers_off() as cursor:
        cursor.execute("DELETE FROM audit_auditentry")
        cursor.execute("DELETE FROM audit_chainhead")
    # Then the chain alone passes as empty; the checkpoints say it once reached #5
    assert (services.verify_chain().ok, services.verify_chain().checked) == (True, 0)
    assert str(verify_refused(checkpoints)) == (
        f"{checkpoints}: the chain head is at #0 but checkpoint 1 (#3 at {at(checkpoints, 1)}) saw the chain reach #3: "
        "the chain was shortened")
