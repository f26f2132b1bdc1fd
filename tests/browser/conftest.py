"""Browser tests: a live server in a thread, headless Chromium, and an audit trail that lets the
test database be flushed.

A transactional test ends with pytest-django flushing every table. The audit tables refuse
DELETE and TRUNCATE by trigger (audit migrations 0002/0003), so ``audit_triggers_released``
switches those triggers off at the test's teardown — before the flush — and on again right
after the flush (and at the next setup, in case a run was interrupted). The flush also removes
the rows the migrations made (role groups, the chain head); they are put back at the same point,
so tests that run later find the database as migrations left it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from django.apps import apps
from django.db import connection
from django.db.models.signals import post_migrate

from conftest import require

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]
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


@pytest.fixture
def audit_triggers_released(transactional_db: Any) -> Iterator[None]:
    """Set up after the transactional database, so it is torn down before pytest-django flushes."""
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


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """One browser per module (never downloaded: Debian's Chromium)."""
    require(os.path.exists(CHROMIUM), f"Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread while it runs; the tests' ORM
    # calls (and the flush after each test) are synchronous all the same. Only for this module.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(live_server: Any, audit_triggers_released: None, chromium: Any) -> Iterator[Any]:
    context = chromium.new_context(base_url=live_server.url, viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(10_000)
    page = context.new_page()
    yield page
    context.close()
