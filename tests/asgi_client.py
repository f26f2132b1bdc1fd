"""Call the project's ASGI application in-process (the hot lane included) from a sync test."""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync


def asgi_request(method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"",
                 chunks: list[bytes] | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request through ``fleetflag.asgi.application``.
    ``chunks`` sends the body in several ASGI messages (as a chunked upload arrives)."""
    from fleetflag.asgi import application

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path.split("?", 1)[0], "raw_path": path.split("?", 1)[0].encode(),
        "query_string": path.split("?", 1)[1].encode() if "?" in path else b"",
        "headers": [(name.lower().encode("latin1"), value.encode("latin1")) for name, value in (headers or {}).items()],
        "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
    }
    parts = chunks if chunks is not None else [body]
    messages = [{"type": "http.request", "body": part, "more_body": i < len(parts) - 1} for i, part in enumerate(parts)]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async_to_sync(application)(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    names = {k.decode("latin1").lower(): v.decode("latin1") for k, v in start["headers"]}
    return start["status"], names, content
