"""The hot lane: bearer requests for the hot API views, answered in front of Django's handler.

Django's ASGI handler costs, per request, a worker thread made and joined (its
``ThreadSensitiveContext``) and two thread hops for the request_started/finished signals,
before any middleware: on one core that caps a view that reads only caches at a few
hundred requests a second (bench/api_bench.py, profiled with py-spy). The lane recognises
``Authorization: Bearer`` requests to the views marked hot (``accounts.authentication.hot_view``:
vehicle sync, evaluate, evaluate/batch), builds the same request Django would, and calls the
same view through ``serve_hot`` — the code path ``ApiEdgeMiddleware`` uses inside Django — so
both answer byte for byte alike. Everything else goes to Django untouched.

A hot view may also carry ``quick``: its own answer to a GET from the caches alone, without a
request object (the steady-state 304 of vehicle sync). ``quick`` returns (status, headers,
body), raises ``ApiError`` for a refusal (rendered here in the one error format), or returns
None when anything else could happen; the view then answers.

What the lane skips and how it is covered: the request signals (the views touch the
database only on a cache miss, in a worker thread, between ``close_old_connections`` calls,
see ``core.http.threads.db``), the sync middleware (a bearer request needs no session, CSRF or
static files; ``serve_hot`` sets the request id and security headers), and the body limit
(checked here, same setting, same 413).
"""

from __future__ import annotations

import gc
import json
import random
import time
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, get_resolver, resolve

from core import metrics
from core.errors import Code
from core.http.body import parse_json, target_problem
from core.http.edge import serve_hot
from core.http.errors import ApiError, edge_error_body, error_body
from core.http.request_id import SAFE_ID
from core.http.threads import in_lane

PREFIX = "/api/v1/"
API_PREFIXES = ("/api/", "/ofrep/")
# What core.http.edge.serve_hot adds to every hot answer.
_SECURITY_HEADERS = [(b"X-Content-Type-Options", b"nosniff"), (b"X-Frame-Options", b"DENY"),
                     (b"Referrer-Policy", b"same-origin")]


class LaneRequest(HttpRequest):
    """What the hot views read of a request (method, META and headers, content type, body,
    request id), built straight from the ASGI scope. Django's ASGIRequest does much more per
    request (query and cookie parsing, content-type parsing through the email package) that
    these views never use."""

    def __init__(self, scope: dict[str, Any], body: bytes) -> None:
        self.scope = scope
        self.method = scope["method"]
        self.path = self.path_info = scope["path"]
        client = scope.get("client") or ("", 0)
        meta: dict[str, Any] = {
            "REQUEST_METHOD": self.method,
            "PATH_INFO": self.path,
            "QUERY_STRING": scope.get("query_string", b"").decode("latin1"),
            "REMOTE_ADDR": client[0],
            "SERVER_NAME": "lane",
        }
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin1").upper().replace("-", "_")
            value = raw_value.decode("latin1")
            if name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                meta[name] = value
                continue
            key = "HTTP_" + name
            meta[key] = f"{meta[key]},{value}" if key in meta else value
        self.META = meta
        self.content_type = meta.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()
        self.content_params = {}
        self.COOKIES = {}
        self.resolver_match = None
        self._body = body
        self._stream = None  # type: ignore[assignment]
        self._read_started = True
_routes: dict[str, Any] = {}


def _match(path: str) -> Any:
    match = _routes.get(path)
    if match is None:
        try:
            match = resolve(path)
        except Resolver404:
            match = False
        if len(_routes) > 20000:
            _routes.clear()
        _routes[path] = match
    return match or None


class HotLane:
    REFREEZE_AFTER = 2000

    def __init__(self, app: Any) -> None:
        self.app = app
        self.served = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        problem = target_problem(scope["path"], scope.get("query_string", b""))
        if problem is not None:
            return await _answer_error(send, scope, problem)
        if not scope["path"].startswith(API_PREFIXES):
            return await self.app(scope, receive, send)
        scope = _with_slash(scope)
        bearer = False
        for name, value in scope["headers"]:
            if name == b"authorization":
                bearer = value[:7].lower() == b"bearer "
                break
        match = _match(scope["path"]) if bearer and scope["path"].startswith(PREFIX) else None
        hot = match is not None and getattr(match.func, "hot", False)
        if match is not None and hot:
            quick = getattr(match.func, "quick", None)
            if quick is not None and scope["method"] == "GET" and await self._quick(quick, scope, send, match):
                return None
        body = await _read_body(scope, receive, send)
        if body is None:
            return None  # refused (413, 415) or the client went away
        if match is not None and hot:
            await self._serve(scope, body, send, match)
            return None
        if body:
            # Every body is held to the one parser here, also on endpoints whose view never reads
            # it (a decision without a comment): bad input is refused, never silently ignored.
            # The hot views parse their own bodies with the same parser.
            try:
                parse_json(body)
            except ApiError as refused:
                return await _answer_error(send, scope, refused)
        await self.app(_replayed_scope(scope, body), _replay(body, receive), send)
        return None

    async def _quick(self, quick: Any, scope: dict[str, Any], send: Any, match: Any) -> bool:
        """The view's answer from the caches, with no request object; False: let the view answer."""
        started = time.perf_counter()
        headers = dict(scope["headers"])
        try:
            decided = await quick(headers, match.kwargs)
        except ApiError as exc:
            body = error_body(exc.error_code, exc.message, request_id="", fields=exc.fields)
            decided = (exc.status_code, [(b"Content-Type", b"application/json"),
                                         *((k.encode(), v.encode()) for k, v in exc.headers.items())], body)
            if exc.status_code == 401:
                decided[1].append((b"WWW-Authenticate", b'Bearer realm="fleetflag"'))
        if decided is None:
            return False
        status, answer_headers, body = decided
        raw_id = headers.get(b"x-request-id", b"").decode("latin1")
        request_id = raw_id if raw_id and SAFE_ID.match(raw_id) else f"{random.getrandbits(128):032x}"
        if isinstance(body, dict):  # an error body: it names the request id
            body["error"]["request_id"] = request_id
            content = json.dumps(body).encode()
        else:
            content = body
        await send({"type": "http.response.start", "status": status,
                    "headers": [*answer_headers, (b"X-Request-ID", request_id.encode()), *_SECURITY_HEADERS]})
        await send({"type": "http.response.body", "body": content})
        metrics.count_request(match.route, "GET", status, time.perf_counter() - started)
        return True

    async def _serve(self, scope: dict[str, Any], body: bytes, send: Any, match: Any) -> None:
        started = time.perf_counter()
        request = LaneRequest(scope, body)
        token = in_lane.set(True)
        try:
            response: HttpResponse = await serve_hot(request, match)
        finally:
            in_lane.reset(token)
        await send({
            "type": "http.response.start",
            "status": response.status_code,
            "headers": [(k.encode("ascii"), v.encode("latin1")) for k, v in response.items()],
        })
        await send({"type": "http.response.body", "body": response.content})
        metrics.count_request(match.route, scope["method"], response.status_code, time.perf_counter() - started)
        self.served += 1
        if self.served == self.REFREEZE_AFTER:
            _freeze()


# -- the edge of every API request: target, body, content type -------------------------------------


def _with_slash(scope: dict[str, Any]) -> dict[str, Any]:
    """A path that only exists with a trailing slash is served as that path: Django would
    redirect, and a client following a 301 turns a POST into a GET."""
    path = scope["path"]
    if path.endswith("/") or _match(path) is not None or _match(path + "/") is None:
        return scope
    return {**scope, "path": path + "/", "raw_path": scope.get("raw_path", path.encode()) + b"/"}


async def _read_body(scope: dict[str, Any], receive: Any, send: Any) -> bytes | None:
    """The whole body, however it arrives (one message or many: a chunked upload has no
    Content-Length), held to ``API_MAX_BODY_BYTES``; None when refused or disconnected."""
    limit = int(settings.API_MAX_BODY_BYTES)
    declared = next((value for name, value in scope["headers"] if name == b"content-length"), None)
    if declared is not None and declared.isdigit() and int(declared) > limit:
        await _answer_error(send, scope, _too_large(limit))
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            await _answer_error(send, scope, _too_large(limit))
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    if body and scope["method"] not in ("GET", "HEAD", "OPTIONS"):
        content_type = next((value for name, value in scope["headers"] if name == b"content-type"), b"")
        if content_type.split(b";", 1)[0].strip().lower() != b"application/json":
            await _answer_error(send, scope, ApiError(415, Code.UNSUPPORTED_MEDIA_TYPE,
                                                      "send the body as application/json"))
            return None
    return body


def _too_large(limit: int) -> ApiError:
    return ApiError(413, Code.PAYLOAD_TOO_LARGE, f"the request body is over the limit of {limit} bytes")


def _replayed_scope(scope: dict[str, Any], body: bytes) -> dict[str, Any]:
    """The scope Django sees: the body's real length declared, whatever the transfer encoding."""
    headers = [(name, value) for name, value in scope["headers"]
               if name not in (b"content-length", b"transfer-encoding")]
    headers.append((b"content-length", str(len(body)).encode()))
    return {**scope, "headers": headers}


def _replay(body: bytes, receive: Any) -> Any:
    """Django's receive: the body already read, in one message; then the client's own
    messages (Django listens for the disconnect while it answers)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Any:
        if pending:
            return pending.pop()
        return await receive()

    return replayed


async def _answer_error(send: Any, scope: dict[str, Any], error: ApiError) -> None:
    raw_id = next((value for name, value in scope["headers"] if name == b"x-request-id"), b"").decode("latin1")
    request_id = raw_id if raw_id and SAFE_ID.match(raw_id) else f"{random.getrandbits(128):032x}"
    body = json.dumps(edge_error_body(scope["path"], error.status_code, error.error_code, error.message,
                                      request_id=request_id, fields=error.fields)).encode()
    headers = [(b"Content-Type", b"application/json"), (b"X-Request-ID", request_id.encode()), *_SECURITY_HEADERS,
               *((name.encode(), value.encode()) for name, value in error.headers.items())]
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    metrics.count_request("edge", scope["method"], error.status_code, 0.0)


def hot_lane(app: Any) -> HotLane:
    _freeze()
    return HotLane(app)


def _freeze() -> None:
    """Take what lives as long as the process out of the garbage collector's generations.

    Without it, full collections over the whole heap (Django, DRF, the URLconf, compiled
    snapshots) stalled the event loop for 20-100 ms every few seconds: that was the p99 of
    every endpoint (bench/api_bench.py). The URLconf is imported first (it would be on the
    first request), and the lane freezes once more after its first requests, when the
    caches and compiled snapshots they build are in place.
    """
    get_resolver().url_patterns  # noqa: B018 - imports every view module now
    gc.collect()
    gc.freeze()
    # A full collection still costs tens of milliseconds (daphne keeps each finished request
    # for up to a second): GC_THRESHOLDS (default 700,10,1000) makes them a hundred times
    # rarer than Python's default. Reference counting frees almost everything a request
    # allocates; the collector is only there for cycles.
    gc.set_threshold(*settings.GC_THRESHOLDS)
