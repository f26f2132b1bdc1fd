"""Seven-year retention: monthly partitions of the audit table (PostgreSQL), archive anchors.

PostgreSQL (13 or later): ``audit_auditentry`` becomes a table PARTITIONED BY RANGE
(created_at), one partition per UTC month plus a DEFAULT partition so that an insert never
fails. A partitioned table's primary key and unique constraints must contain the
partition key, so the database keeps PRIMARY KEY (id, created_at), UNIQUE (seq,
created_at) and UNIQUE (hash, created_at); Django still uses ``id`` as the primary key
(every lookup by id stays correct, the ids come from one identity sequence), and the
global uniqueness of ``seq`` is kept by the ChainHead row lock taken by every append
(``verify_chain`` reports a duplicate). The other indexes are re-created with the names
Django gave them. The append-only triggers are re-created: the row trigger on the parent
is cloned to every partition; TRUNCATE triggers are not inherited, so each partition gets
its own (``audit_create_partition`` adds it).

``audit_ensure_partitions(months_ahead)`` creates the default partition and the current
month plus ``months_ahead`` (``manage.py audit_partitions ensure`` runs it, monthly from
cron). ``audit_create_partition(month)`` creates one month; rows that fell into the
DEFAULT partition for that month are moved into it in the same transaction.

SQLite keeps the plain table; its triggers are re-created because altering a column
rebuilds the table there (and drops its triggers).

Both: ``AuditAnchor`` (where the chain starts after archiving) is append-only too, and
the chain head never moves back. On PostgreSQL its row cannot be deleted either; SQLite
keeps DELETE possible (the test runner empties tables with DELETE there) because a
restarted chain could not be written anyway: UNIQUE (seq) refuses its first entry.
"""

from typing import Any

import django.utils.timezone
from django.db import migrations, models

PG_FUNCTIONS = r"""
CREATE OR REPLACE FUNCTION audit_ensure_default_partition() RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    IF to_regclass('audit_auditentry_default') IS NOT NULL THEN
        RETURN NULL;
    END IF;
    CREATE TABLE audit_auditentry_default PARTITION OF audit_auditentry DEFAULT;
    CREATE TRIGGER audit_entry_no_truncate BEFORE TRUNCATE ON audit_auditentry_default
        FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
    RETURN 'audit_auditentry_default';
END;
$$;

CREATE OR REPLACE FUNCTION audit_create_partition(p_month date) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    month_start date := date_trunc('month', p_month)::date;
    start_at timestamptz := month_start::timestamp AT TIME ZONE 'UTC';
    end_at timestamptz := (month_start + interval '1 month')::timestamp AT TIME ZONE 'UTC';
    part_name text := 'audit_auditentry_' || to_char(month_start, '"y"YYYY"m"MM');
    copied bigint;
    removed bigint;
BEGIN
    IF to_regclass(part_name) IS NOT NULL THEN
        RETURN NULL;
    END IF;
    PERFORM audit_ensure_default_partition();
    IF EXISTS (
        SELECT 1 FROM audit_auditentry_default WHERE created_at >= start_at AND created_at < end_at
    ) THEN
        -- A partition may not be created over rows the DEFAULT partition holds: move them.
        -- Detached, the default partition has no row trigger, so the copied rows can be
        -- removed from it; all of this commits or rolls back together.
        ALTER TABLE audit_auditentry DETACH PARTITION audit_auditentry_default;
        EXECUTE format('CREATE TABLE %I PARTITION OF audit_auditentry FOR VALUES FROM (%L) TO (%L)',
                       part_name, start_at, end_at);
        EXECUTE format('INSERT INTO %I SELECT * FROM audit_auditentry_default '
                       'WHERE created_at >= %L AND created_at < %L', part_name, start_at, end_at);
        GET DIAGNOSTICS copied = ROW_COUNT;
        DELETE FROM audit_auditentry_default WHERE created_at >= start_at AND created_at < end_at;
        GET DIAGNOSTICS removed = ROW_COUNT;
        IF copied <> removed THEN
            RAISE EXCEPTION 'audit partition %: copied % rows but removed % from the default partition',
                part_name, copied, removed;
        END IF;
        ALTER TABLE audit_auditentry ATTACH PARTITION audit_auditentry_default DEFAULT;
    ELSE
        EXECUTE format('CREATE TABLE %I PARTITION OF audit_auditentry FOR VALUES FROM (%L) TO (%L)',
                       part_name, start_at, end_at);
    END IF;
    EXECUTE format('CREATE TRIGGER audit_entry_no_truncate BEFORE TRUNCATE ON %I '
                   'FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()', part_name);
    RETURN part_name;
END;
$$;

CREATE OR REPLACE FUNCTION audit_ensure_partitions(months_ahead integer DEFAULT 3) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    this_month date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
    created text;
BEGIN
    created := audit_ensure_default_partition();
    IF created IS NOT NULL THEN
        RETURN NEXT created;
    END IF;
    FOR i IN 0..greatest(months_ahead, 0) LOOP
        created := audit_create_partition((this_month + make_interval(months => i))::date);
        IF created IS NOT NULL THEN
            RETURN NEXT created;
        END IF;
    END LOOP;
END;
$$;
"""

PG_TRIGGERS = """
CREATE TRIGGER audit_entry_no_update_delete BEFORE UPDATE OR DELETE ON audit_auditentry
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_entry_no_truncate BEFORE TRUNCATE ON audit_auditentry
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
"""

PG_GUARDS = r"""
CREATE TRIGGER audit_anchor_no_update_delete BEFORE UPDATE OR DELETE ON audit_auditanchor
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_anchor_no_truncate BEFORE TRUNCATE ON audit_auditanchor
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE OR REPLACE FUNCTION audit_head_forward_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' OR NEW.seq < OLD.seq THEN
        RAISE EXCEPTION 'the audit chain head only moves forward: % refused', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_chainhead_forward_only BEFORE UPDATE OR DELETE ON audit_chainhead
    FOR EACH ROW EXECUTE FUNCTION audit_head_forward_only();
"""
PG_GUARDS_DROP = """
DROP TRIGGER IF EXISTS audit_chainhead_forward_only ON audit_chainhead;
DROP FUNCTION IF EXISTS audit_head_forward_only();
"""

SQLITE_TRIGGERS = [
    "DROP TRIGGER IF EXISTS audit_entry_no_update;",
    "DROP TRIGGER IF EXISTS audit_entry_no_delete;",
    "CREATE TRIGGER audit_entry_no_update BEFORE UPDATE ON audit_auditentry "
    "BEGIN SELECT RAISE(ABORT, 'audit entries are append-only: UPDATE refused'); END;",
    "CREATE TRIGGER audit_entry_no_delete BEFORE DELETE ON audit_auditentry "
    "BEGIN SELECT RAISE(ABORT, 'audit entries are append-only: DELETE refused'); END;",
    "CREATE TRIGGER audit_anchor_no_update BEFORE UPDATE ON audit_auditanchor "
    "BEGIN SELECT RAISE(ABORT, 'audit anchors are append-only: UPDATE refused'); END;",
    "CREATE TRIGGER audit_anchor_no_delete BEFORE DELETE ON audit_auditanchor "
    "BEGIN SELECT RAISE(ABORT, 'audit anchors are append-only: DELETE refused'); END;",
    "CREATE TRIGGER audit_chainhead_forward_only BEFORE UPDATE ON audit_chainhead WHEN NEW.seq < OLD.seq "
    "BEGIN SELECT RAISE(ABORT, 'the audit chain head only moves forward: UPDATE refused'); END;",
]
SQLITE_TRIGGERS_DROP = [
    "DROP TRIGGER IF EXISTS audit_anchor_no_update;",
    "DROP TRIGGER IF EXISTS audit_anchor_no_delete;",
    "DROP TRIGGER IF EXISTS audit_chainhead_forward_only;",
]

# The unique constraints Django made on the plain table; the partitioned table replaces
# them with (column, created_at).
# Nobody searches hashes by prefix: the partitioned table goes without Django's pattern
# index on hash (one fewer index on every partition for 7 years).
PLAIN_UNIQUE = {"audit_auditentry_pkey", "audit_auditentry_seq_key", "audit_auditentry_hash_key"}
NOT_PARTITIONED = {"audit_auditentry_hash_718ebbcd_like"}
PARTITIONED_UNIQUE = {"audit_auditentry_pkey", "audit_entry_seq_created_uniq", "audit_entry_hash_created_uniq"}


def _fetch(cursor: Any, sql: str, params: Any = None) -> list[Any]:
    cursor.execute(sql, params)
    return list(cursor.fetchall())


def _other_indexes(cursor: Any, skip: set[str]) -> list[str]:
    rows = _fetch(
        cursor,
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
        "AND tablename = 'audit_auditentry' ORDER BY indexname",
    )
    return [definition for name, definition in rows if name not in skip]


def _rebuild(cursor: Any, *, partitioned: bool) -> None:
    """Copy audit_auditentry into a new table of the other kind, in one transaction."""
    indexes = _other_indexes(cursor, PLAIN_UNIQUE | NOT_PARTITIONED if partitioned else PARTITIONED_UNIQUE)
    (rows_before,) = _fetch(cursor, "SELECT count(*) FROM audit_auditentry")[0]
    (sequence,) = _fetch(cursor, "SELECT pg_get_serial_sequence('audit_auditentry', 'id')")[0]
    cursor.execute("ALTER TABLE audit_auditentry RENAME TO audit_auditentry_old")
    cursor.execute(f"ALTER SEQUENCE {sequence} RENAME TO audit_auditentry_old_id_seq")
    cursor.execute(
        "CREATE TABLE audit_auditentry (LIKE audit_auditentry_old INCLUDING DEFAULTS INCLUDING IDENTITY)"
        + (" PARTITION BY RANGE (created_at)" if partitioned else "")
    )
    if partitioned:
        cursor.execute(PG_FUNCTIONS)
        months = _fetch(
            cursor,
            "SELECT DISTINCT date_trunc('month', created_at AT TIME ZONE 'UTC')::date FROM audit_auditentry_old",
        )
        for (month,) in months:
            cursor.execute("SELECT audit_create_partition(%s)", [month])
        cursor.execute("SELECT audit_ensure_partitions(3)")
    cursor.execute("INSERT INTO audit_auditentry SELECT * FROM audit_auditentry_old")
    (rows_after,) = _fetch(cursor, "SELECT count(*) FROM audit_auditentry")[0]
    if rows_after != rows_before:
        raise RuntimeError(f"audit table rebuild copied {rows_after} of {rows_before} entries")
    cursor.execute(
        "SELECT setval(pg_get_serial_sequence('audit_auditentry', 'id'), "
        "coalesce((SELECT max(id) FROM audit_auditentry), 0) + 1, false)"
    )
    # DROP TABLE fires no row or TRUNCATE trigger; every entry is in the new table (checked).
    cursor.execute("DROP TABLE audit_auditentry_old")
    if partitioned:
        cursor.execute(
            "ALTER TABLE audit_auditentry ADD CONSTRAINT audit_auditentry_pkey PRIMARY KEY (id, created_at), "
            "ADD CONSTRAINT audit_entry_seq_created_uniq UNIQUE (seq, created_at), "
            "ADD CONSTRAINT audit_entry_hash_created_uniq UNIQUE (hash, created_at)"
        )
    else:
        cursor.execute(
            "ALTER TABLE audit_auditentry ADD CONSTRAINT audit_auditentry_pkey PRIMARY KEY (id), "
            "ADD CONSTRAINT audit_auditentry_seq_key UNIQUE (seq), "
            "ADD CONSTRAINT audit_auditentry_hash_key UNIQUE (hash)"
        )
    for definition in indexes:
        cursor.execute(definition)
    cursor.execute(PG_TRIGGERS)


def forwards(apps: Any, schema_editor: Any) -> None:
    connection = schema_editor.connection
    if connection.vendor == "postgresql":
        if connection.pg_version < 130000:
            raise RuntimeError("the partitioned audit table needs PostgreSQL 13 or later (row triggers on partitions)")
        with connection.cursor() as cursor:
            _rebuild(cursor, partitioned=True)
            cursor.execute(PG_GUARDS)
    elif connection.vendor == "sqlite":
        for statement in SQLITE_TRIGGERS:
            schema_editor.execute(statement)


def backwards(apps: Any, schema_editor: Any) -> None:
    connection = schema_editor.connection
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(PG_GUARDS_DROP)
            _rebuild(cursor, partitioned=False)
            cursor.execute("DROP FUNCTION IF EXISTS audit_ensure_partitions(integer)")
            cursor.execute("DROP FUNCTION IF EXISTS audit_create_partition(date)")
            cursor.execute("DROP FUNCTION IF EXISTS audit_ensure_default_partition()")
    elif connection.vendor == "sqlite":
        for statement in SQLITE_TRIGGERS_DROP:
            schema_editor.execute(statement)


def restore_sqlite_entry_triggers(apps: Any, schema_editor: Any) -> None:
    """Unapplying: the AlterFields below rebuild the SQLite table again (dropping its
    triggers); this runs after them and puts 0002's triggers back."""
    if schema_editor.connection.vendor == "sqlite":
        for statement in SQLITE_TRIGGERS[:4]:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("audit", "0002_append_only")]

    operations = [
        migrations.RunPython(migrations.RunPython.noop, restore_sqlite_entry_triggers),
        migrations.AlterField(model_name="auditentry", name="action", field=models.CharField(max_length=32)),
        migrations.AlterField(
            model_name="auditentry", name="flag_key", field=models.CharField(blank=True, max_length=100)
        ),
        migrations.CreateModel(
            name="AuditAnchor",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("seq", models.BigIntegerField(help_text="The last archived entry's position in the chain.", unique=True)),
                ("hash", models.CharField(help_text="The last archived entry's hash.", max_length=64)),
                ("first_seq", models.BigIntegerField(help_text="The first entry of the archive.")),
                ("entries", models.BigIntegerField(help_text="How many entries the archive holds.")),
                ("period_start", models.DateTimeField()),
                ("period_end", models.DateTimeField()),
                ("partition", models.CharField(blank=True, help_text="The detached PostgreSQL partition.", max_length=63)),
                ("archive_name", models.CharField(help_text="The JSON-lines archive file.", max_length=255)),
                ("archive_sha256", models.CharField(help_text="SHA-256 of the archive file.", max_length=64)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("actor", models.CharField(max_length=255)),
            ],
            options={"verbose_name": "audit archive anchor", "ordering": ("-seq",)},
        ),
        migrations.RunPython(forwards, backwards),
    ]
