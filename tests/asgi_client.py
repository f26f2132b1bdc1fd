"""Call the project's ASGI application in-process (the hot lane included) from a sync test."""

from __future__ import annotations

import asyncio
from typing import Any
from unittest.mock import patch
from urllib.parse import unquote

from asgiref.sync import async_to_sync
from django.core import signals
from django.db import close_old_connections


def asgi_request(method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"",
                 chunks: list[bytes] | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request through ``fleetflag.asgi.application``.
    ``chunks`` sends the body in several ASGI messages (as a chunked upload arrives)."""
    from fleetflag.asgi import application

    headers = dict(headers or {})
    if chunks is None and body and not any(name.lower() == "content-length" for name in headers):
        headers["Content-Length"] = str(len(body))  # as any client sends it with a whole body
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        # As daphne: the path percent-decoded (UTF-8), the query string raw.
        "path": unquote(path.split("?", 1)[0], errors="surrogateescape"), "raw_path": path.split("?", 1)[0].encode(),
        "query_string": path.split("?", 1)[1].encode() if "?" in path else b"",
        "headers": [(name.lower().encode("latin1"), value.encode("latin1")) for name, value in headers.items()],
        "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
    }
    parts = chunks if chunks is not None else [body]
    messages = [{"type": "http.request", "body": part, "more_body": i < len(parts) - 1} for i, part in enumerate(parts)]
    sent: list[dict[str, Any]] = []

    async def run() -> None:
        done = asyncio.Event()

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop(0)
            await done.wait()  # a client stays connected until the response is complete
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                done.set()

        await asyncio.wait_for(application(scope, receive, send), timeout=30)

    # As Django's test client does: a test's connection stays open across the request (the
    # handler's signals, and the lane around database work, would close it mid-transaction).
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        with patch("core.http.threads.close_old_connections", lambda: None):
            async_to_sync(run)()
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)
    start = next(m for m in sent if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    names = {k.decode("latin1").lower(): v.decode("latin1") for k, v in start["headers"]}
    return start["status"], names, content
