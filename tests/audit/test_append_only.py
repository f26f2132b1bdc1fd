"""Audit entries cannot be changed or removed: not through the ORM, not through SQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import psycopg
import pytest
from django.db import DatabaseError, connection, transaction

from audit import services
from audit.models import AppendOnlyError, AuditAnchor, AuditEntry, ChainHead
from tests.audit.conftest import append, json_param, move_head, sha256_of

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
    # The head never moves back nor goes away (either would let a second chain start).
    assert "only moves forward" in str(refused_by_database("UPDATE audit_chainhead SET seq = 0"))
    assert "only moves forward" in str(refused_by_database("DELETE FROM audit_chainhead"))
    assert ChainHead.objects.get(pk=1).seq == 5


def test_chain_head__delete_and_repoint__refused_by_database(chain: list[AuditEntry]) -> None:
    # Given a head at #5
    head = ChainHead.objects.get(pk=1)
    # When it is deleted, re-pointed in place, moved back, or moved more than one entry ahead
    errors = [
        refused_by_database("DELETE FROM audit_chainhead"),
        refused_by_database("UPDATE audit_chainhead SET hash = %s", ["f" * 64]),
        refused_by_database("UPDATE audit_chainhead SET seq = 4"),
        refused_by_database("UPDATE audit_chainhead SET seq = 7"),
    ]
    # Then the database refuses each; only record()'s one-step move is allowed
    assert [str(error).split("\n")[0] for error in errors] == [
        "the audit chain head only moves forward, one entry at a time: DELETE refused",
        "the audit chain head only moves forward, one entry at a time: UPDATE refused",
        "the audit chain head only moves forward, one entry at a time: UPDATE refused",
        "the audit chain head only moves forward, one entry at a time: UPDATE refused",
    ]
    stored = ChainHead.objects.get(pk=1)
    assert (stored.seq, stored.hash, stored.mac) == (5, head.hash, head.mac)


def test_chain_head__delete_on_empty_chain__sqlite_allows_postgres_refuses(db: None) -> None:
    # SQLite lets the head of an empty chain go (the test runner's flush; record() starts
    # again from genesis, there is nothing to continue); PostgreSQL never does.
    if connection.vendor == "postgresql":
        assert "only moves forward" in str(refused_by_database("DELETE FROM audit_chainhead"))
        assert ChainHead.objects.count() == 1
    else:
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM audit_chainhead")
        assert ChainHead.objects.count() == 0


def test_chain_head__truncate__refused_by_postgres_trigger(require_postgres: None, chain: list[AuditEntry]) -> None:
    error = refused_by_database("TRUNCATE audit_chainhead")
    assert isinstance(error.__cause__, psycopg.errors.InsufficientPrivilege)
    assert str(error).split("\n")[0] == "the audit chain head only moves forward, one entry at a time: TRUNCATE refused"
    assert ChainHead.objects.get(pk=1).seq == 5


# -- as the application's database role (PostgreSQL) ------------------------------------------


@contextmanager
def as_application_role() -> Iterator[str]:
    """The rest of the test's transaction runs as a role with the grants docs/audit.md gives the
    application: no superuser, not the tables' owner. Created inside the test's transaction, so
    rolled back with it; named after the test database so parallel runs do not meet."""
    role = f"{connection.settings_dict['NAME']}_app"[:63]
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE ROLE "{role}" NOLOGIN NOSUPERUSER')
        cursor.execute(APPLICATION_GRANTS.replace("fleetflag_app", f'"{role}"'))
        cursor.execute(f'SET LOCAL ROLE "{role}"')
    try:
        yield role
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET ROLE")


# The grants docs/audit.md ("Database roles") gives the application's role; kept identical.
APPLICATION_GRANTS = """
GRANT SELECT, INSERT ON audit_auditentry, audit_auditanchor TO fleetflag_app;
GRANT SELECT, UPDATE ON audit_chainhead TO fleetflag_app;
"""


def test_application_role__documented_grants__record_and_verify_work(require_postgres: None,
                                                                      chain: list[AuditEntry]) -> None:
    with as_application_role():
        append(1)
        report = services.verify_chain()
    assert (report.ok, report.checked) == (True, 6)


def test_application_role__change_remove_or_unguard__refused(require_postgres: None, chain: list[AuditEntry]) -> None:
    # Given the application's own database role
    with as_application_role():
        # When it tries every way to change or remove what was recorded, or to lift the guards
        errors = {
            "update entry": refused_by_database("UPDATE audit_auditentry SET actor = 'x'"),
            "delete entry": refused_by_database("DELETE FROM audit_auditentry"),
            "truncate entries": refused_by_database("TRUNCATE audit_auditentry"),
            "delete head": refused_by_database("DELETE FROM audit_chainhead"),
            "truncate head": refused_by_database("TRUNCATE audit_chainhead"),
            "head back": refused_by_database("UPDATE audit_chainhead SET seq = 0, hash = %s", ["0" * 64]),
            "head re-pointed": refused_by_database("UPDATE audit_chainhead SET hash = %s", ["f" * 64]),
            "disable triggers": refused_by_database("ALTER TABLE audit_auditentry DISABLE TRIGGER USER"),
            "drop head trigger": refused_by_database("DROP TRIGGER audit_chainhead_forward_only ON audit_chainhead"),
            "replication role": refused_by_database("SET LOCAL session_replication_role = replica"),
        }
        remaining = (AuditEntry.objects.count(), ChainHead.objects.get(pk=1).seq)
    # Then each is refused, by its privileges or by the triggers
    assert all(isinstance(error.__cause__, psycopg.errors.InsufficientPrivilege) for error in errors.values())
    assert {name: str(error).split("\n")[0] for name, error in errors.items()} == {
        "update entry": "permission denied for table audit_auditentry",
        "delete entry": "permission denied for table audit_auditentry",
        "truncate entries": "permission denied for table audit_auditentry",
        "delete head": "permission denied for table audit_chainhead",
        "truncate head": "permission denied for table audit_chainhead",
        "head back": "the audit chain head only moves forward, one entry at a time: UPDATE refused",
        "head re-pointed": "the audit chain head only moves forward, one entry at a time: UPDATE refused",
        "disable triggers": "must be owner of table audit_auditentry",
        "drop head trigger": "must be owner of relation audit_chainhead",
        "replication role": 'permission denied to set parameter "session_replication_role"',
    }
    assert remaining == (5, 5)


def test_application_role__forged_insert_and_head_move__allowed_but_verify_fails(
    require_postgres: None, chain: list[AuditEntry]
) -> None:
    # Given the application's role, which may INSERT entries and move the head by one
    with as_application_role():
        last = AuditEntry.objects.get(seq=5)
        forged = AuditEntry(seq=6, actor_type="user", actor="sue", action="APPROVE_CHANGE", prev_hash=last.hash,
                            kid="k1")
        forged.hash = sha256_of(forged)
        forged.save(force_insert=True)
        move_head(6, forged.hash)
        # When verified
        report = services.verify_chain()
    # Then the database took the rows, and verification refuses the forged entry
    assert AuditEntry.objects.filter(seq=6, actor="sue").exists()
    assert (report.ok, report.first_broken_seq) == (False, 6)
    assert report.problem.startswith("its content does not match its MAC")


@pytest.mark.usefixtures("committed_db")
def test_committed_db__guards_on_during_test__flush_after_it_succeeds() -> None:
    # Given committed entries (the flush after this test must get past every audit trigger,
    # the chain head's included, or the teardown errors)
    with transaction.atomic():
        append(2)
    # Then during the test the guards hold, on the head as on the entries
    assert "append-only" in str(refused_by_database("DELETE FROM audit_auditentry"))
    assert "only moves forward" in str(refused_by_database("DELETE FROM audit_chainhead"))
    assert (ChainHead.objects.get(pk=1).seq, services.verify_chain().ok) == (2, True)
