"""Audit entries cannot be changed or removed: not through the ORM, not through SQL."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest
from django.db import DatabaseError, connection, transaction

from audit.models import AppendOnlyError, AuditAnchor, AuditEntry, ChainHead
from tests.audit.conftest import json_param

pytestmark = pytest.mark.django_db


def refused_by_database(sql: str, params: list[object] | None = None) -> DatabaseError:
    """Run ``sql`` in a savepoint; it must fail, and the failure is returned."""
    with pytest.raises(DatabaseError) as caught, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)
    return caught.value


def test_model_save_of_existing_entry__refused(chain: list[AuditEntry]) -> None:
    entry = AuditEntry.objects.get(seq=2)
    entry.actor = "system:rewritten"
    with pytest.raises(AppendOnlyError):
        entry.save()
    assert AuditEntry.objects.get(seq=2).actor == "system:tests"


def test_model_delete__refused(chain: list[AuditEntry]) -> None:
    with pytest.raises(AppendOnlyError):
        AuditEntry.objects.get(seq=2).delete()
    assert AuditEntry.objects.count() == 5


def test_queryset_update_and_delete__refused(chain: list[AuditEntry]) -> None:
    with pytest.raises(AppendOnlyError):
        AuditEntry.objects.filter(seq=2).update(actor="x")
    with pytest.raises(AppendOnlyError):
        AuditEntry.objects.all().delete()
    assert AuditEntry.objects.filter(actor="system:tests").count() == 5


def test_anchor__append_only_in_python(db: None) -> None:
    moment = datetime(2018, 1, 1, tzinfo=UTC)
    anchor = AuditAnchor.objects.create(seq=3, hash="a" * 64, first_seq=1, entries=3, period_start=moment,
                                        period_end=moment, archive_name="x.jsonl", archive_sha256="b" * 64, actor="t")
    with pytest.raises(AppendOnlyError):
        anchor.save()
    with pytest.raises(AppendOnlyError):
        anchor.delete()
    with pytest.raises(AppendOnlyError):
        AuditAnchor.objects.all().update(seq=1)
    with pytest.raises(AppendOnlyError):
        AuditAnchor.objects.all().delete()


def test_sql_update_and_delete__refused_by_trigger(chain: list[AuditEntry]) -> None:
    # Both databases: the trigger refuses, whatever the client.
    update = refused_by_database(f"UPDATE audit_auditentry SET after = {json_param()} WHERE seq = 2", ['{"n": 9}'])
    delete = refused_by_database("DELETE FROM audit_auditentry WHERE seq = 2")
    assert "append-only: UPDATE refused" in str(update)
    assert "append-only: DELETE refused" in str(delete)
    assert AuditEntry.objects.get(seq=2).after == {"n": 1}
    assert AuditEntry.objects.count() == 5


def test_sql_update_delete_truncate__refused_by_postgres_triggers(
    require_postgres: None, chain: list[AuditEntry]
) -> None:
    # Given the partition that holds the entries, and the parent table
    with connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT tableoid::regclass::text FROM audit_auditentry")
        (partition,) = cursor.fetchone()
    # When UPDATE, DELETE and TRUNCATE are tried on the parent and on the partition itself
    errors = [
        refused_by_database("UPDATE audit_auditentry SET actor = 'x'"),
        refused_by_database(f'UPDATE "{partition}" SET actor = \'x\''),
        refused_by_database("DELETE FROM audit_auditentry"),
        refused_by_database(f'DELETE FROM "{partition}"'),
        refused_by_database("TRUNCATE audit_auditentry"),
        refused_by_database(f'TRUNCATE "{partition}"'),
        refused_by_database("TRUNCATE audit_auditentry_default"),
    ]
    # Then each is refused by the trigger with PostgreSQL's insufficient_privilege
    assert all(isinstance(error.__cause__, psycopg.errors.InsufficientPrivilege) for error in errors)
    assert [str(error).split("\n")[0] for error in errors] == [
        "audit entries are append-only: UPDATE refused",
        "audit entries are append-only: UPDATE refused",
        "audit entries are append-only: DELETE refused",
        "audit entries are append-only: DELETE refused",
        "audit entries are append-only: TRUNCATE refused",
        "audit entries are append-only: TRUNCATE refused",
        "audit entries are append-only: TRUNCATE refused",
    ]
    assert AuditEntry.objects.filter(actor="system:tests").count() == 5


def test_every_partition__has_its_own_truncate_trigger(require_postgres: None, db: None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, "
            "  bool_or(t.tgname = 'audit_entry_no_truncate' AND (t.tgtype & 32) <> 0), "
            "  bool_or(t.tgname = 'audit_entry_no_update_delete') "
            "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "LEFT JOIN pg_trigger t ON t.tgrelid = c.oid "
            "WHERE i.inhparent = 'audit_auditentry'::regclass GROUP BY c.relname"
        )
        rows = cursor.fetchall()
    assert len(rows) >= 5  # this month, three ahead, DEFAULT
    assert all(truncate and row_trigger for _, truncate, row_trigger in rows), rows


def test_anchor_and_chain_head__guarded_by_database(chain: list[AuditEntry]) -> None:
    moment = datetime(2018, 1, 1, tzinfo=UTC)
    AuditAnchor.objects.create(seq=3, hash="a" * 64, first_seq=1, entries=3, period_start=moment,
                               period_end=moment, archive_name="x.jsonl", archive_sha256="b" * 64, actor="t")
    assert "append-only" in str(refused_by_database("UPDATE audit_auditanchor SET seq = 1"))
    assert "append-only" in str(refused_by_database("DELETE FROM audit_auditanchor"))
    # The head never moves back (which would let a second chain start).
    assert "only moves forward" in str(refused_by_database("UPDATE audit_chainhead SET seq = 0"))
    if connection.vendor == "postgresql":  # SQLite: UNIQUE (seq) refuses a restarted chain instead
        assert "only moves forward" in str(refused_by_database("DELETE FROM audit_chainhead"))
    assert ChainHead.objects.get(pk=1).seq == 5
