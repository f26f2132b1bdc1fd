"""Probes and the outside systems the project reaches."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import Client

from conftest import require

pytestmark = pytest.mark.django_db


def test_healthz__always__ok(client: Client) -> None:
    response = client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_readyz__services_up__ok_with_request_id(client: Client) -> None:
    response = client.get("/readyz", HTTP_X_REQUEST_ID="probe-1")
    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "ok"
    assert body["checks"]["database"] == "ok" and body["checks"]["cache"] == "ok"
    assert response["X-Request-ID"] == "probe-1"


def test_request_id__unsafe_header__replaced(client: Client) -> None:
    response = client.get("/healthz", HTTP_X_REQUEST_ID="bad id\nwith newline")
    assert response["X-Request-ID"] != "bad id\nwith newline"
    assert len(response["X-Request-ID"]) == 32


def test_analytics__clickhouse_configured__answers() -> None:
    require(bool(settings.CLICKHOUSE_URL), "ClickHouse (CLICKHOUSE_URL)")
    from experiments import analytics

    assert analytics.ping().split(".")[0].isdigit()


def test_redis__configured__round_trip() -> None:
    require(bool(settings.REDIS_URL), "Redis (REDIS_URL)")
    from django.core.cache import cache

    cache.set("ff:test:redis", {"a": 1}, 5)
    assert cache.get("ff:test:redis") == {"a": 1}
    assert "RedisCache" in settings.CACHES["default"]["BACKEND"]


def test_database__ci__is_postgresql() -> None:
    from django.db import connection

    require(connection.vendor == "postgresql", "PostgreSQL (DATABASE_URL)")
    assert connection.vendor == "postgresql"
