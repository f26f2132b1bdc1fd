"""Root fixtures. Services that CI has (PostgreSQL, Redis) must not be skipped there."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def require(condition: bool, what: str) -> None:
    """Skip on a machine without the service; fail in CI, where it must be there."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} is required in CI but is not configured", pytrace=False)
    pytest.skip(f"{what} is not configured here")


@pytest.fixture
def require_postgres() -> None:
    from django.db import connection

    require(connection.vendor == "postgresql", "PostgreSQL (DATABASE_URL)")


@pytest.fixture
def require_redis() -> None:
    from django.conf import settings

    require(bool(settings.REDIS_URL), "Redis (REDIS_URL)")


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    """The snapshot cache outlives a test's rolled-back transaction: start each test clean."""
    from django.core.cache import cache

    from flags import snapshots

    cache.clear()
    snapshots.forget_local()
    yield
    snapshots.forget_local()


@pytest.fixture
def committed_db(transactional_db: Any) -> Iterator[None]:
    """Committed transactions (live servers, threads), with the append-only audit tables
    released only for pytest-django's flush afterwards: see tests/committed_db.py."""
    from tests.committed_db import release_audit_triggers_around_flush

    yield from release_audit_triggers_around_flush()


@pytest.fixture
def on_commit(django_capture_on_commit_callbacks: Any) -> Any:
    """Run on-commit side effects as they would run after a real commit."""
    return lambda: django_capture_on_commit_callbacks(execute=True)
