"""The only module that talks to ClickHouse (vehicle metrics, experiment results).

This issue only establishes the connection; tables and queries arrive with the
analytics issue. ``CLICKHOUSE_URL`` is ``clickhouse://host:9000/database``.
"""

from __future__ import annotations

from urllib.parse import urlparse

from clickhouse_driver import Client
from django.conf import settings


def configured() -> bool:
    return bool(settings.CLICKHOUSE_URL)


def client() -> Client:
    url = urlparse(settings.CLICKHOUSE_URL)
    return Client(
        host=url.hostname or "127.0.0.1",
        port=url.port or 9000,
        database=(url.path or "/default").lstrip("/") or "default",
        user=url.username or "default",
        password=url.password or "",
        connect_timeout=3,
        # clickhouse-driver otherwise waits very long on a silent server.
        send_receive_timeout=30,
    )


def ping() -> str:
    """The server's version; raises when ClickHouse cannot be reached."""
    rows = client().execute("SELECT version()")
    return str(rows[0][0])
