"""Helpers to arrange audit chains and to tamper with them the way an attacker with SQL would.

Every test here runs with a configured audit key (kid ``k1``), as production does; tests
about the embedded development key or other keys change the settings themselves.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import connection

from audit import services
from audit.models import AuditEntry
from core.actors import Actor
from tests.committed_db import AuditTriggers

KEY_1 = "test-audit-key-one-0123456789abcdef0123456789"
KEY_2 = "test-audit-key-two-0123456789abcdef0123456789"
WRONG_KEY = "not-the-audit-key-0123456789abcdef0123456789"


def use_keys(settings: Any, current: str, **keys: str) -> None:
    """Configure the audit keys as settings would from AUDIT_HMAC_KEY / AUDIT_HMAC_OLD_KEYS."""
    settings.AUDIT_HMAC_KID = current
    settings.AUDIT_HMAC_KEYS = keys
    settings.AUDIT_HMAC_DEV_KEY_IN_USE = False


@pytest.fixture(autouse=True)
def audit_key(settings: Any) -> None:
    use_keys(settings, "k1", k1=KEY_1)


@contextmanager
def triggers_off() -> Iterator[Any]:
    """What a database superuser could do: switch the append-only triggers off for a moment
    (entries, anchors and the chain head)."""
    sqlite = AuditTriggers()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL session_replication_role = replica")
        else:
            sqlite.disable()
        try:
            yield cursor
        finally:
            if connection.vendor == "postgresql":
                cursor.execute("SET LOCAL session_replication_role = origin")
            else:
                sqlite.enable()


def json_param() -> str:
    return "CAST(%s AS jsonb)" if connection.vendor == "postgresql" else "%s"


JSON_COLUMNS = ("before", "after")


def update_entry(cursor: Any, seq: int, **columns: Any) -> None:
    """UPDATE one entry's columns in SQL (only possible with the triggers off)."""
    assignments = ", ".join(f"{name} = {json_param() if name in JSON_COLUMNS else '%s'}" for name in columns)
    values = [json.dumps(value) if name in JSON_COLUMNS else value for name, value in columns.items()]
    cursor.execute(f"UPDATE audit_auditentry SET {assignments} WHERE seq = %s", [*values, seq])


def append(count: int, **fields: Any) -> list[AuditEntry]:
    """Append ``count`` entries through the audit service (a real chain)."""
    actor = Actor.for_system("tests")
    return [
        services.record(actor=actor, action=fields.get("action", "TEST"), after={"n": index, **fields.get("after", {})})
        for index in range(count)
    ]


def sha256_of(entry: AuditEntry) -> str:
    """The hash as documented before keyed MACs: plain SHA-256 of the canonical payload."""
    return hashlib.sha256(entry.canonical_payload()).hexdigest()


def move_head(seq: int, entry_hash: str) -> None:
    """The head moved forward by one, as the database allows anyone with UPDATE on it (its MAC is
    left alone: the key is not in the database)."""
    with connection.cursor() as cursor:
        cursor.execute("UPDATE audit_chainhead SET seq = %s, hash = %s WHERE id = 1", [seq, entry_hash])


@pytest.fixture
def chain(db: Any) -> list[AuditEntry]:
    return append(5)
