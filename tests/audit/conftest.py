"""Helpers to arrange audit chains and to tamper with them the way an attacker with SQL would."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import connection

from audit import services
from audit.models import AuditEntry
from core.actors import Actor

SQLITE_GUARDS = {
    "audit_entry_no_update": "CREATE TRIGGER audit_entry_no_update BEFORE UPDATE ON audit_auditentry "
    "BEGIN SELECT RAISE(ABORT, 'audit entries are append-only: UPDATE refused'); END;",
    "audit_entry_no_delete": "CREATE TRIGGER audit_entry_no_delete BEFORE DELETE ON audit_auditentry "
    "BEGIN SELECT RAISE(ABORT, 'audit entries are append-only: DELETE refused'); END;",
}


@contextmanager
def triggers_off() -> Iterator[Any]:
    """What a database superuser could do: switch the append-only triggers off for a moment."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL session_replication_role = replica")
        else:
            for name in SQLITE_GUARDS:
                cursor.execute(f"DROP TRIGGER {name}")
        try:
            yield cursor
        finally:
            if connection.vendor == "postgresql":
                cursor.execute("SET LOCAL session_replication_role = origin")
            else:
                for statement in SQLITE_GUARDS.values():
                    cursor.execute(statement)


def json_param() -> str:
    return "CAST(%s AS jsonb)" if connection.vendor == "postgresql" else "%s"


def append(count: int, **fields: Any) -> list[AuditEntry]:
    """Append ``count`` entries through the audit service (a real chain)."""
    actor = Actor.for_system("tests")
    return [
        services.record(actor=actor, action=fields.get("action", "TEST"), after={"n": index, **fields.get("after", {})})
        for index in range(count)
    ]


@pytest.fixture
def chain(db: Any) -> list[AuditEntry]:
    return append(5)
