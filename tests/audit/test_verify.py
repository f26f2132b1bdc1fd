"""verify_chain and ``manage.py verify_audit``: intact chains pass, every kind of tampering is named.

Forgeries that need the audit key, and the key's rotation, are in test_forgery.py and test_keys.py.
"""

from __future__ import annotations

import io
import json
from itertools import pairwise

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from audit import services
from audit.models import GENESIS_HASH, AuditEntry, ChainHead
from tests.audit.conftest import append, json_param, triggers_off

pytestmark = pytest.mark.django_db


def verify_audit() -> str:
    out = io.StringIO()
    call_command("verify_audit", stdout=out)
    return out.getvalue()


def verify_audit_failure() -> CommandError:
    with pytest.raises(CommandError) as caught:
        verify_audit()
    return caught.value


def test_verify_chain__empty__intact() -> None:
    report = services.verify_chain()
    assert (report.ok, report.checked, report.head_seq) == (True, 0, 0)


def test_verify_audit__intact_chain__exit_0_and_one_line(chain: list[AuditEntry]) -> None:
    # Given five entries appended through the service
    # When the command runs
    output = verify_audit()
    # Then it prints one line naming the span, the key and the head
    head = ChainHead.objects.get(pk=1)
    assert output == f"audit chain intact: 5 entries (#1..#5) from genesis, keys k1 (5); head #5 {head.hash[:16]}\n"


def test_record__links__genesis_then_previous_hash(chain: list[AuditEntry]) -> None:
    stored = list(AuditEntry.objects.order_by("seq"))
    assert [entry.seq for entry in stored] == [1, 2, 3, 4, 5]
    assert stored[0].prev_hash == GENESIS_HASH
    assert all(later.prev_hash == earlier.hash for earlier, later in pairwise(stored))
    assert all(entry.compute_hash() == entry.hash for entry in stored)
    assert {entry.kid for entry in stored} == {"k1"}
    head = ChainHead.objects.get(pk=1)
    assert (head.seq, head.hash, head.kid, head.mac) == (5, stored[-1].hash, "k1", head.compute_mac())


def test_verify_audit__content_changed_behind_the_trigger__fails_naming_seq(chain: list[AuditEntry]) -> None:
    # Given an attacker who switches the trigger off and rewrites what entry #3 recorded
    with triggers_off() as cursor:
        cursor.execute(f"UPDATE audit_auditentry SET after = {json_param()} WHERE seq = 3", [json.dumps({"n": 99})])
    # When verified
    error = verify_audit_failure()
    # Then the command fails (exit 1) naming #3 and what is wrong
    assert error.returncode == 1
    assert "BROKEN at entry #3: its content does not match its MAC" in str(error)
    report = services.verify_chain()
    assert (report.ok, report.first_broken_seq, report.checked) == (False, 3, 2)


def test_verify_audit__partition_trigger_disabled_and_row_updated__fails(
    require_postgres: None, chain: list[AuditEntry]
) -> None:
    # Given the trigger switched off on just the partition that holds entry #2
    with triggers_off() as cursor:  # only to find the partition without side effects
        cursor.execute("SELECT tableoid::regclass::text FROM audit_auditentry WHERE seq = 2")
        (partition,) = cursor.fetchone()
    with triggers_off() as cursor:
        cursor.execute(f'ALTER TABLE "{partition}" DISABLE TRIGGER USER')
        cursor.execute("UPDATE audit_auditentry SET actor = 'someone-else' WHERE seq = 2")
        cursor.execute(f'ALTER TABLE "{partition}" ENABLE TRIGGER USER')
    assert partition.startswith("audit_auditentry_y")
    assert "#2: its content does not match its MAC" in str(verify_audit_failure())


def test_verify_audit__middle_entry_deleted__reports_it_missing(chain: list[AuditEntry]) -> None:
    with triggers_off() as cursor:
        cursor.execute("DELETE FROM audit_auditentry WHERE seq = 3")
    error = verify_audit_failure()
    assert "BROKEN at entry #3: entry #3 is missing" in str(error)


def test_verify_audit__first_entries_deleted__not_taken_as_a_later_start(chain: list[AuditEntry]) -> None:
    # Without an archive anchor the chain must start at #1 from genesis.
    with triggers_off() as cursor:
        cursor.execute("DELETE FROM audit_auditentry WHERE seq <= 2")
    error = verify_audit_failure()
    assert "BROKEN at entry #1: entry #1 to #2 is missing (the chain must start at #1, from genesis)" in str(error)


def test_verify_audit__last_entry_deleted__head_says_missing(chain: list[AuditEntry]) -> None:
    with triggers_off() as cursor:
        cursor.execute("DELETE FROM audit_auditentry WHERE seq = 5")
    assert "#5: entry #5 is missing (the chain head is at #5)" in str(verify_audit_failure())


def test_verify_audit__last_entry_edited_and_rehashed__head_mismatch(chain: list[AuditEntry]) -> None:
    # Given the last entry rewritten with a freshly computed MAC of its own (by someone with the key)
    last = AuditEntry.objects.get(seq=5)
    last.after = {"n": "forged"}
    forged_hash = last.compute_hash()
    with triggers_off() as cursor:
        cursor.execute(
            f"UPDATE audit_auditentry SET after = {json_param()}, hash = %s WHERE seq = 5",
            [json.dumps(last.after), forged_hash],
        )
    # Then its own hash fits, but the chain head remembers the original
    assert AuditEntry.objects.get(seq=5).compute_hash() == forged_hash
    error = verify_audit_failure()
    assert "BROKEN at entry #5: the chain head's hash does not match entry #5" in str(error)


def test_verify_audit__middle_entry_edited_and_rehashed__next_link_broken(chain: list[AuditEntry]) -> None:
    # Given entry #2 rewritten and re-MACed by someone with the key, the entries after it left alone
    entry = AuditEntry.objects.get(seq=2)
    entry.actor = "system:innocent"
    with triggers_off() as cursor:
        cursor.execute("UPDATE audit_auditentry SET actor = %s, hash = %s WHERE seq = 2",
                       [entry.actor, entry.compute_hash()])
    error = verify_audit_failure()
    assert "BROKEN at entry #3: its link to entry #2 is broken" in str(error)


def test_verify_chain__entry_inserted_beyond_head__refused(chain: list[AuditEntry]) -> None:
    # Given a row inserted directly, with a valid MAC, not through audit.record (so the head did not move)
    last = AuditEntry.objects.get(seq=5)
    forged = AuditEntry(seq=6, actor_type="system", actor="system:forger", action="TEST", prev_hash=last.hash,
                        kid="k1")
    forged.hash = forged.compute_hash()
    forged.save(force_insert=True)
    report = services.verify_chain()
    assert (report.ok, report.first_broken_seq) == (False, 6)
    assert "lies beyond the chain head #5" in report.problem


def test_verify_chain__duplicate_seq__reported(require_postgres: None, chain: list[AuditEntry]) -> None:
    # PostgreSQL's partitioned table enforces unique (seq, created_at) only; the chain
    # lock keeps seq unique, and verification catches a duplicate made behind its back.
    original = AuditEntry.objects.get(seq=4)
    twin = AuditEntry(seq=4, actor_type="system", actor="system:twin", action="TEST", prev_hash=original.prev_hash,
                      kid="k1")
    twin.hash = twin.compute_hash()
    twin.save(force_insert=True)
    report = services.verify_chain()
    assert (report.ok, report.first_broken_seq, report.problem) == (False, 4, "entry #4 appears twice")


def test_verify_chain__appends_while_verifying__not_mistaken_for_forgery(
    chain: list[AuditEntry], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an entry appended right after verification read the chain head
    real_filter = ChainHead.objects.filter
    reads = []

    def head_then_append(*args: object, **kwargs: object) -> object:
        result = real_filter(*args, **kwargs)
        if not reads:
            reads.append(result.first())
            append(1)
            return type("HeadAsRead", (), {"first": staticmethod(lambda: reads[0])})()
        return result

    monkeypatch.setattr(ChainHead.objects, "filter", head_then_append)
    # When verified
    report = services.verify_chain()
    # Then the new entry is verified too, not reported as lying beyond the head
    assert report.ok, report.problem
    assert (report.head_seq, report.checked, report.last_seq) == (5, 6, 6)
