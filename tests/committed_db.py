"""Committed-transaction tests and the append-only audit tables.

A transactional test ends with pytest-django flushing every table. The audit tables refuse
DELETE and TRUNCATE by trigger (audit migrations 0002-0004), so ``committed_db`` switches
those triggers off at the test's teardown — before the flush — and on again right after the
flush (and at the next setup, in case a run was interrupted). The flush also removes the rows
the migrations made (role groups, the chain head); they are put back at the same point, so
tests that run later find the database as migrations left it (``audit.record`` refuses to
append without the head rather than start a second chain).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.apps import apps
from django.db import connection
from django.db.models.signals import post_migrate

# The append-only tables; on PostgreSQL their partitions are found and included.
AUDIT_TABLES = ("audit_auditentry", "audit_auditanchor", "audit_chainhead")


def _pg_tables(cursor: Any) -> list[str]:
    cursor.execute(
        """
        WITH RECURSIVE tables(oid) AS (
            SELECT to_regclass(name)::oid FROM unnest(%s::text[]) AS name WHERE to_regclass(name) IS NOT NULL
            UNION
            SELECT inherits.inhrelid FROM pg_inherits AS inherits JOIN tables ON inherits.inhparent = tables.oid
        )
        SELECT oid::regclass::text FROM tables
        """,
        [list(AUDIT_TABLES)],
    )
    return [row[0] for row in cursor.fetchall()]


class AuditTriggers:
    """Switch the audit tables' user triggers off and on (SQLite: drop and re-create them)."""

    def __init__(self) -> None:
        self.sqlite_saved: list[tuple[str, str]] = []

    def disable(self) -> None:
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                for table in _pg_tables(cursor):
                    cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
            elif connection.vendor == "sqlite":
                placeholders = ", ".join("%s" for _ in AUDIT_TABLES)
                cursor.execute(f"SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name IN "
                               f"({placeholders})", list(AUDIT_TABLES))
                self.sqlite_saved = [(name, sql) for name, sql in cursor.fetchall()]
                for name, _ in self.sqlite_saved:
                    cursor.execute(f'DROP TRIGGER IF EXISTS "{name}"')

    def enable(self) -> None:
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                for table in _pg_tables(cursor):
                    cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
            elif connection.vendor == "sqlite":
                for _, sql in self.sqlite_saved:
                    cursor.execute(sql)
                self.sqlite_saved = []


def restore_migration_rows() -> None:
    """What the data migrations made and a flush removes: role groups, the audit chain head."""
    from django.contrib.auth.models import Group, Permission

    from accounts.roles import sync_role_groups
    from audit.models import ChainHead

    sync_role_groups(Group, Permission)
    ChainHead.objects.get_or_create(pk=1)


def release_audit_triggers_around_flush() -> Iterator[None]:
    """The body of the ``committed_db`` fixture (root conftest): set up after the transactional
    database, so it is torn down before pytest-django flushes."""
    triggers = AuditTriggers()
    triggers.enable()
    restore_migration_rows()
    yield
    # post_migrate is sent once per app after the flush; act on the last one, once.
    last = [config for config in apps.get_app_configs() if config.models_module is not None][-1]
    uid = "browser-tests-audit-triggers"

    def after_flush(sender: Any, **kwargs: Any) -> None:
        if sender.label != last.label:
            return
        post_migrate.disconnect(dispatch_uid=uid)
        triggers.enable()
        restore_migration_rows()

    post_migrate.connect(after_flush, dispatch_uid=uid, weak=False)
    triggers.disable()
