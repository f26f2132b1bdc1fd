"""Keyed MACs for the audit chain; the chain head can no longer be deleted, truncated or re-pointed.

Columns: ``AuditEntry.kid`` (the id of the key that MACed the entry), ``ChainHead.kid`` and
``.mac``, ``AuditAnchor.kid`` and ``.mac``. Existing entries keep their plain SHA-256
hashes and get ``kid = ''`` (legacy): nothing is re-hashed. Re-MACing them here would vouch,
with the key, for rows that anybody with the database's rights could have rewritten before
today; left as they are they stay what they were, and ``verify_chain`` accepts them only up
to ``settings.AUDIT_LEGACY_LAST_SEQ`` (a number kept outside the database, so legacy entries
cannot be appended or substituted later). The migration prints that number when there are
such entries. The first keyed entry links to the last legacy one, so from then on the legacy
prefix can no longer be rewritten without breaking a MAC.

Triggers: the chain head may only move forward by exactly one entry (the move ``record``
makes); on PostgreSQL it can never be deleted or truncated, on SQLite not deleted while
there are entries or anchors. SQLite re-creates every audit trigger because adding a column
with a default rebuilds the table there (and drops its triggers).
"""

from typing import Any

from django.db import migrations, models

PG_FORWARDS = """
CREATE OR REPLACE FUNCTION audit_head_forward_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NEW.id = OLD.id AND NEW.seq = OLD.seq + 1 THEN
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION 'the audit chain head only moves forward, one entry at a time: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_chainhead_no_truncate BEFORE TRUNCATE ON audit_chainhead
    FOR EACH STATEMENT EXECUTE FUNCTION audit_head_forward_only();
"""
# 0003's function, for unapplying.
PG_BACKWARDS = """
DROP TRIGGER IF EXISTS audit_chainhead_no_truncate ON audit_chainhead;
CREATE OR REPLACE FUNCTION audit_head_forward_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' OR NEW.seq < OLD.seq THEN
        RAISE EXCEPTION 'the audit chain head only moves forward: % refused', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
"""

SQLITE_ENTRY_AND_ANCHOR = [
    "DROP TRIGGER IF EXISTS audit_entry_no_update;",
    "DROP TRIGGER IF EXISTS audit_entry_no_delete;",
    "DROP TRIGGER IF EXISTS audit_anchor_no_update;",
    "DROP TRIGGER IF EXISTS audit_anchor_no_delete;",
    "CREATE TRIGGER audit_entry_no_update BEFORE UPDATE ON audit_auditentry "
    "BEGIN SELECT RAISE(ABORT, 'audit entries are append-only: UPDATE refused'); END;",
    "CREATE TRIGGER audit_entry_no_delete BEFORE DELETE ON audit_auditentry "
    "BEGIN SELECT RAISE(ABORT, 'audit entries are append-only: DELETE refused'); END;",
    "CREATE TRIGGER audit_anchor_no_update BEFORE UPDATE ON audit_auditanchor "
    "BEGIN SELECT RAISE(ABORT, 'audit anchors are append-only: UPDATE refused'); END;",
    "CREATE TRIGGER audit_anchor_no_delete BEFORE DELETE ON audit_auditanchor "
    "BEGIN SELECT RAISE(ABORT, 'audit anchors are append-only: DELETE refused'); END;",
]
SQLITE_FORWARDS = [
    *SQLITE_ENTRY_AND_ANCHOR,
    "DROP TRIGGER IF EXISTS audit_chainhead_forward_only;",
    "DROP TRIGGER IF EXISTS audit_chainhead_no_delete;",
    "CREATE TRIGGER audit_chainhead_forward_only BEFORE UPDATE ON audit_chainhead "
    "WHEN NEW.seq <> OLD.seq + 1 OR NEW.id <> OLD.id "
    "BEGIN SELECT RAISE(ABORT, 'the audit chain head only moves forward, one entry at a time: UPDATE refused'); END;",
    # Refused while there is a chain to continue. The head of an empty chain may go: the
    # test runner's flush deletes it after a committed test that was skipped before
    # tests/committed_db.py could release the triggers, and audit.record re-creates the head
    # of an empty chain (nothing to start a second chain after).
    "CREATE TRIGGER audit_chainhead_no_delete BEFORE DELETE ON audit_chainhead "
    "WHEN EXISTS (SELECT 1 FROM audit_auditentry) OR EXISTS (SELECT 1 FROM audit_auditanchor) "
    "BEGIN SELECT RAISE(ABORT, 'the audit chain head only moves forward, one entry at a time: DELETE refused'); END;",
]
# What 0003 left, for unapplying (run after the RemoveFields rebuilt the tables again).
SQLITE_BACKWARDS = [
    *SQLITE_ENTRY_AND_ANCHOR,
    "DROP TRIGGER IF EXISTS audit_chainhead_forward_only;",
    "DROP TRIGGER IF EXISTS audit_chainhead_no_delete;",
    "CREATE TRIGGER audit_chainhead_forward_only BEFORE UPDATE ON audit_chainhead WHEN NEW.seq < OLD.seq "
    "BEGIN SELECT RAISE(ABORT, 'the audit chain head only moves forward: UPDATE refused'); END;",
]


def forwards(apps: Any, schema_editor: Any) -> None:
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(PG_FORWARDS)  # no parameters: the function's '%' must reach plpgsql as is
    elif vendor == "sqlite":
        for statement in SQLITE_FORWARDS:
            schema_editor.execute(statement)
    head = apps.get_model("audit", "ChainHead").objects.filter(pk=1).first()
    if head is not None and head.seq > 0:
        # Said once, here: only the operator can record it outside the database.
        print(
            f"\n  audit: entries up to #{head.seq} predate keyed MACs (plain SHA-256). Set "
            f"AUDIT_LEGACY_LAST_SEQ={head.seq} and run `manage.py audit_checkpoint` now (docs/audit.md, "
            "\"Entries from before keyed MACs\")."
        )


def backwards(apps: Any, schema_editor: Any) -> None:
    keyed = apps.get_model("audit", "AuditEntry").objects.exclude(kid="").order_by("seq").first()
    if keyed is not None:
        raise RuntimeError(
            f"audit entries from #{keyed.seq} on carry keyed MACs: unapplying 0004 would drop their key ids"
        )
    if schema_editor.connection.vendor == "postgresql":
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(PG_BACKWARDS)


def restore_sqlite_triggers(apps: Any, schema_editor: Any) -> None:
    """Unapplying: the RemoveFields rebuild the SQLite tables (dropping their triggers);
    this runs after them and puts 0003's triggers back."""
    if schema_editor.connection.vendor == "sqlite":
        for statement in SQLITE_BACKWARDS:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("audit", "0003_partitioned_retention")]

    operations = [
        migrations.RunPython(migrations.RunPython.noop, restore_sqlite_triggers),
        migrations.AddField(
            model_name="auditentry",
            name="kid",
            field=models.CharField(
                blank=True, default="", max_length=32,
                help_text="Id of the key that MACed this entry; empty: a legacy SHA-256 entry.",
            ),
        ),
        migrations.AddField(
            model_name="chainhead", name="kid", field=models.CharField(blank=True, default="", max_length=32)
        ),
        migrations.AddField(
            model_name="chainhead", name="mac", field=models.CharField(blank=True, default="", max_length=64)
        ),
        migrations.AddField(
            model_name="auditanchor", name="kid", field=models.CharField(blank=True, default="", max_length=32)
        ),
        migrations.AddField(
            model_name="auditanchor", name="mac", field=models.CharField(blank=True, default="", max_length=64)
        ),
        migrations.RunPython(forwards, backwards),
    ]
