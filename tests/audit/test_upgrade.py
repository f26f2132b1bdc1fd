"""Upgrading a database whose entries were hashed with plain SHA-256 (migration audit.0004).

Runs the real ``manage.py`` on a scratch SQLite file: migrate to 0003, write entries the way
the code before keyed MACs did, migrate, then verify with and without AUDIT_LEGACY_LAST_SEQ.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.conf import settings

from audit.models import GENESIS_HASH, AuditEntry
from tests.audit.conftest import KEY_1, sha256_of

WHEN = datetime(2026, 1, 10, 9, 0, 0, 123456, tzinfo=UTC)


def manage(environ: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=settings.BASE_DIR, env=environ,
                          capture_output=True, text=True, timeout=120, check=False)


def write_legacy_entries(database: Path, count: int) -> list[AuditEntry]:
    """What ``audit.record`` wrote before keyed MACs: no kid, SHA-256, the head moved along."""
    made: list[AuditEntry] = []
    with sqlite3.connect(database) as db:
        for seq in range(1, count + 1):
            entry = AuditEntry(seq=seq, created_at=WHEN, actor_type="system", actor="system:old", action="TEST",
                               after={"n": seq}, prev_hash=made[-1].hash if made else GENESIS_HASH)
            entry.hash = sha256_of(entry)
            db.execute(
                "INSERT INTO audit_auditentry (seq, created_at, actor_type, actor, action, flag_key, object_type, "
                "object_id, after, user_agent, request_id, prev_hash, hash) "
                "VALUES (?, ?, ?, ?, ?, '', '', '', ?, '', '', ?, ?)",
                [seq, "2026-01-10 09:00:00.123456", entry.actor_type, entry.actor, entry.action,
                 f'{{"n": {seq}}}', entry.prev_hash, entry.hash],
            )
            made.append(entry)
        db.execute("UPDATE audit_chainhead SET seq = ?, hash = ? WHERE id = 1", [count, made[-1].hash])
    return made


def test_migration_0004__legacy_entries__kept_reported_verified_within_setting(tmp_path: Path) -> None:
    # Given a database at audit.0003 holding three entries hashed the old way, and a configured key
    database = tmp_path / "fleetflag.sqlite3"
    environ = {name: value for name, value in os.environ.items()
               if not name.startswith(("AUDIT_", "FLEETFLAG_", "DATABASE_", "REDIS_"))}
    environ.update(DATABASE_URL=f"sqlite:///{database}", FLEETFLAG_VAR_DIR=str(tmp_path), AUDIT_HMAC_KEY=KEY_1,
                   AUDIT_HMAC_KID="k1")
    assert manage(environ, "migrate", "audit", "0003", "-v0").returncode == 0
    legacy = write_legacy_entries(database, 3)
    # When migrated
    migrated = manage(environ, "migrate", "audit", "-v1")  # the audit app depends on no other
    # Then the migration says which entries are legacy and what to record outside the database
    assert migrated.returncode == 0, migrated.stderr
    assert ("audit: entries up to #3 predate keyed MACs (plain SHA-256). Set AUDIT_LEGACY_LAST_SEQ=3 and run "
            "`manage.py audit_checkpoint` now") in migrated.stdout
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT seq, kid, hash FROM audit_auditentry ORDER BY seq").fetchall()
    assert rows == [(entry.seq, "", entry.hash) for entry in legacy]  # nothing re-hashed
    # And until the setting says so, verification refuses them (test_keys covers that in
    # process); with it they verify as legacy, and the next entry is keyed and continues the chain
    environ["AUDIT_LEGACY_LAST_SEQ"] = "3"
    script = ("from django.core.management import call_command\nfrom django.db import transaction\n"
              "from audit import services\nfrom core.actors import Actor\n"
              "call_command('verify_audit')\n"
              "with transaction.atomic():\n    services.record(actor=Actor.for_system('upgrade'), action='TEST')\n"
              "call_command('verify_audit')\n")
    verified = manage(environ, "shell", "--no-imports", "-c", script)
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.splitlines()[0] == (f"audit chain intact: 3 entries (#1..#3) from genesis, keys legacy "
                                               f"SHA-256 (3); head #3 {legacy[-1].hash[:16]}")
    assert verified.stdout.splitlines()[1].startswith("audit chain intact: 4 entries (#1..#4) from genesis, keys "
                                                      "legacy SHA-256 (3), k1 (1); head #4 ")
    assert verified.stderr.startswith("note: entries #1 to #3 predate keyed MACs (plain SHA-256)")
    # And the chain head's new guard is in place
    with sqlite3.connect(database) as db, pytest.raises(sqlite3.DatabaseError) as caught:
        db.execute("DELETE FROM audit_chainhead")
    assert str(caught.value) == "the audit chain head only moves forward, one entry at a time: DELETE refused"
