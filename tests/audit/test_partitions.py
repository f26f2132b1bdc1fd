"""PostgreSQL: the audit table is partitioned by month; the ORM, the chain and retention work on it."""

from __future__ import annotations

import io
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from audit import services
from audit.models import AuditAnchor, AuditEntry
from tests.audit.conftest import append, triggers_off

pytestmark = pytest.mark.django_db

OLD = datetime(2018, 1, 15, 12, 0, tzinfo=UTC)


def partition_of(seq: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tableoid::regclass::text FROM audit_auditentry WHERE seq = %s", [seq])
        return str(cursor.fetchone()[0])


def attached() -> list[str]:
    return [partition.name for partition in services.partitions_list()]


def test_table__partitioned_by_month_with_composite_keys(require_postgres: None, db: None) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_partkeydef('audit_auditentry'::regclass)")
        (partition_key,) = cursor.fetchone()
        cursor.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'audit_auditentry'::regclass ORDER BY conname"
        )
        constraints = dict(cursor.fetchall())
    assert partition_key == "RANGE (created_at)"
    assert constraints == {
        "audit_auditentry_pkey": "PRIMARY KEY (id, created_at)",
        "audit_entry_hash_created_uniq": "UNIQUE (hash, created_at)",
        "audit_entry_seq_created_uniq": "UNIQUE (seq, created_at)",
    }
    this_month = timezone.now().date().replace(day=1)
    expected = [services.partition_name(this_month)]
    for _ in range(3):
        this_month = (this_month + timedelta(days=32)).replace(day=1)
        expected.append(services.partition_name(this_month))
    assert attached() == [*expected, "audit_auditentry_default"]


def test_orm__insert_lookup_filter_on_partitioned_table(require_postgres: None, chain: list[AuditEntry]) -> None:
    # Django keeps ``id`` as the primary key; the database's is (id, created_at).
    entry = chain[2]
    assert entry.pk is not None
    assert AuditEntry.objects.get(pk=entry.pk).seq == 3
    assert AuditEntry.objects.filter(pk__in=[chain[0].pk, chain[4].pk]).count() == 2
    assert list(AuditEntry.objects.order_by("-seq").values_list("seq", flat=True)[:2]) == [5, 4]
    assert partition_of(3) == services.partition_name(entry.created_at.date())
    assert services.verify_chain().ok


def test_admin__changelist_and_entry_pages_work(require_postgres: None, chain: list[AuditEntry], admin_client) -> None:
    listing = admin_client.get("/admin/audit/auditentry/")
    detail = admin_client.get(f"/admin/audit/auditentry/{chain[1].pk}/change/")
    assert (listing.status_code, detail.status_code) == (200, 200)
    assert b"system:tests" in detail.content


def test_insert_outside_partitions__lands_in_default_then_moves_to_its_month(
    require_postgres: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given entries written in a month that has no partition yet (a cron run missed)
    far = timezone.now() + timedelta(days=200)
    monkeypatch.setattr(services, "_now", lambda: far)
    append(2)
    monkeypatch.undo()
    append(1)
    assert partition_of(1) == "audit_auditentry_default"
    # When that month's partition is created
    created = services.partition_create(far.date())
    # Then the rows moved into it, the default is empty, the chain is intact and still guarded
    assert created == services.partition_name(far.date())
    assert partition_of(1) == partition_of(2) == created
    assert {p.name: p.entries for p in services.partitions_list()}["audit_auditentry_default"] == 0
    assert services.verify_chain().ok
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid IN (to_regclass(%s), "
                       "to_regclass('audit_auditentry_default'))", [created])
        assert cursor.fetchone()[0] == 4  # row trigger + TRUNCATE trigger, on each


def test_audit_partitions_ensure__idempotent_and_listed(require_postgres: None, db: None) -> None:
    out = io.StringIO()
    call_command("audit_partitions", "ensure", "--months-ahead", "5", stdout=out)
    call_command("audit_partitions", "ensure", "--months-ahead", "5", stdout=out)
    call_command("audit_partitions", "list", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("created: audit_auditentry_y") and lines[0].count(",") == 1
    assert lines[1] == "all partitions exist already"
    assert len(lines[2:]) == 7 and lines[-1] == "audit_auditentry_default\tDEFAULT\t0 entries"


def _old_and_new_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three entries in January 2018, then two now."""
    services.partition_create(date(2018, 1, 1))
    monkeypatch.setattr(services, "_now", lambda: OLD)
    append(3)
    monkeypatch.undo()
    append(2)


def test_archive__old_month_exported_verified_anchored_detached(
    require_postgres: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given a month older than seven years
    _old_and_new_chain(monkeypatch)
    archive = tmp_path / "audit-2018-01.jsonl"
    # When it is archived
    out = io.StringIO()
    call_command("audit_partitions", "archive", "2018-01", "--output", str(archive), stdout=out)
    # Then the file holds its entries with their hashes and verifies on its own
    rows = [json.loads(line) for line in archive.read_text().splitlines()]
    assert [row["seq"] for row in rows] == [1, 2, 3]
    anchor = AuditAnchor.objects.get()
    assert (anchor.seq, anchor.first_seq, anchor.entries, anchor.hash) == (3, 1, 3, rows[-1]["hash"])
    assert anchor.archive_sha256 == services.file_sha256(archive)
    assert "archived 3 entries #1..#3 of 2018-01" in out.getvalue()
    # And the partition is detached and renamed (kept for the DBA), its rows out of the table
    assert "audit_auditentry_y2018m01" not in attached()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM audit_archived_y2018m01")
        assert cursor.fetchone()[0] == 3
    assert list(AuditEntry.objects.order_by("seq").values_list("seq", flat=True)) == [4, 5]
    # And the chain verifies from the anchor; the archive verifies against it
    report = services.verify_chain()
    assert (report.ok, report.anchor_seq, report.first_seq, report.checked) == (True, 3, 4, 2)
    check = io.StringIO()
    call_command("verify_audit", "--archive", str(archive), stdout=check)
    assert f"{archive}: 3 entries intact (#1..#3); matches anchor #3" in check.getvalue()
    assert "from archive anchor #3" in check.getvalue()


def test_archive__then_first_kept_entry_deleted__verification_fails(
    require_postgres: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _old_and_new_chain(monkeypatch)
    services.partition_archive(month=date(2018, 1, 1), output=tmp_path / "a.jsonl", actor="test")
    with triggers_off() as cursor:
        cursor.execute("DELETE FROM audit_auditentry WHERE seq = 4")
    report = services.verify_chain()
    assert (report.ok, report.first_broken_seq) == (False, 4)
    assert report.problem == "entry #4 is missing (the chain must start at #4, right after archive anchor #3)"


def test_archive__month_within_retention__refused_and_nothing_detached(
    require_postgres: None, chain: list[AuditEntry], tmp_path: Path
) -> None:
    this_month = timezone.now().date().replace(day=1)
    before = attached()
    with pytest.raises(CommandError) as caught:
        call_command("audit_partitions", "archive", f"{this_month:%Y-%m}", "--output", str(tmp_path / "x.jsonl"))
    assert "within the 7-year retention period" in str(caught.value)
    assert attached() == before
    assert not AuditAnchor.objects.exists()
    assert AuditEntry.objects.count() == 5


def test_archive__younger_month_before_older__refused(
    require_postgres: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _old_and_new_chain(monkeypatch)
    services.partition_create(date(2018, 2, 1))
    with pytest.raises(services.RetentionError) as caught:
        services.partition_archive(month=date(2018, 2, 1), output=tmp_path / "feb.jsonl", actor="test")
    assert "archive the oldest month first" in str(caught.value)
    assert "audit_auditentry_y2018m02" in attached()
    assert not AuditAnchor.objects.exists()


def test_archive__tampered_old_entry__refused_before_detaching(
    require_postgres: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _old_and_new_chain(monkeypatch)
    with triggers_off() as cursor:
        cursor.execute("UPDATE audit_auditentry SET actor = 'x' WHERE seq = 2")
    with pytest.raises(services.RetentionError) as caught:
        services.partition_archive(month=date(2018, 1, 1), output=tmp_path / "a.jsonl", actor="test")
    assert "does not verify" in str(caught.value) and "#2" in str(caught.value)
    assert "audit_auditentry_y2018m01" in attached()
    assert not AuditAnchor.objects.exists()


def test_audit_partitions__sqlite__explains_plain_table(db: None) -> None:
    if connection.vendor == "postgresql":
        pytest.skip("the SQLite behaviour")
    with pytest.raises(CommandError) as caught:
        call_command("audit_partitions", "ensure")
    assert "partitioned on PostgreSQL only" in str(caught.value)


def test_retention_cutoff__seven_years_leap_day() -> None:
    assert services.retention_cutoff(datetime(2032, 2, 29, tzinfo=UTC)) == datetime(2025, 2, 28, tzinfo=UTC)
    assert services.month_bounds(date(2018, 12, 1)) == (datetime(2018, 12, 1, tzinfo=UTC),
                                                       datetime(2019, 1, 1, tzinfo=UTC))
