"""The API's edge, outermost in MIDDLEWARE and async-only.

- Refuses bodies over ``API_MAX_BODY_BYTES`` by Content-Length with 413 before anything
  reads them (Django's DATA_UPLOAD_MAX_MEMORY_SIZE catches bodies without one).
- Counts every request for ``/metrics`` by route and status.
- Hands bearer-authenticated requests for the hot views (``accounts.authentication.hot_view``) straight to
  them: under ASGI each sync middleware below costs thread hops per request, and a bearer
  request needs none of them (no session, no CSRF, no static files). It sets the request
  id and the security headers those middlewares would have set. Everything else goes on
  down the normal chain.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, resolve

from core import metrics
from core.errors import Code
from core.http.body import target_problem
from core.http.errors import edge_error_body, error_response
from core.http.request_id import SAFE_ID

API_PREFIXES = ("/api/", "/ofrep/")


def _request_id(request: HttpRequest) -> str:
    incoming = request.META.get("HTTP_X_REQUEST_ID", "")
    # The same 32 hex digits as RequestIdMiddleware's uuid4().hex, without a syscall per request.
    return incoming if incoming and SAFE_ID.match(incoming) else f"{random.getrandbits(128):032x}"


class ApiEdgeMiddleware:
    sync_capable = False
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Awaitable[HttpResponse]]) -> None:
        self.get_response = get_response
        self.limit = int(settings.API_MAX_BODY_BYTES)
        markcoroutinefunction(self)  # so Django and asgiref see an async callable

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        path = request.path_info
        response: HttpResponse | None = None
        route = "unmatched"
        if path.startswith(API_PREFIXES):
            response = self._bad_target(request) or self._too_large(request)
            if response is None:
                match = self._match(path)
                if match is not None:
                    route = match.route
                    if getattr(match.func, "hot", False) and request.META.get("HTTP_AUTHORIZATION", "")[:7].lower() == "bearer ":
                        response = await self._fast(request, match)
        if response is None:
            response = await self.get_response(request)
            resolved = getattr(request, "resolver_match", None)
            if resolved is not None:
                route = resolved.route
        metrics.count_request(route, request.method or "", response.status_code, time.perf_counter() - started)
        return response

    @staticmethod
    def _bad_target(request: HttpRequest) -> HttpResponse | None:
        problem = target_problem(request.path_info, request.META.get("QUERY_STRING", ""))
        if problem is None:
            return None
        request.request_id = _request_id(request)  # type: ignore[attr-defined]
        body = edge_error_body(request.path_info, problem.status_code, problem.error_code, problem.message,
                               request_id=request.request_id, fields=problem.fields)  # type: ignore[attr-defined]
        response = HttpResponse(json.dumps(body), status=problem.status_code, content_type="application/json",
                                charset="utf-8")
        response["X-Request-ID"] = request.request_id  # type: ignore[attr-defined]
        return response

    @staticmethod
    def _match(path: str) -> Any:
        try:
            return resolve(path)
        except Resolver404:
            return None

    def _too_large(self, request: HttpRequest) -> HttpResponse | None:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length <= self.limit:
            return None
        request.request_id = _request_id(request)  # type: ignore[attr-defined]
        response = error_response(request, 413, Code.PAYLOAD_TOO_LARGE,
                                  f"the request body is {length} bytes; the limit is {self.limit}")
        response["X-Request-ID"] = request.request_id  # type: ignore[attr-defined]
        return response

    @staticmethod
    async def _fast(request: HttpRequest, match: Any) -> HttpResponse:
        return await serve_hot(request, match)


async def serve_hot(request: HttpRequest, match: Any) -> HttpResponse:
    """Answer a bearer request for a hot view without the sync middleware (also used by
    ``core.http.lane.HotLane``, before Django's handler)."""
    request.request_id = _request_id(request)  # type: ignore[attr-defined]
    request.resolver_match = match
    response: HttpResponse = await match.func(request, *match.args, **match.kwargs)
    response["X-Request-ID"] = request.request_id  # type: ignore[attr-defined]
    response["X-Content-Type-Options"] = "nosniff"
    response["X-Frame-Options"] = "DENY"
    response["Referrer-Policy"] = "same-origin"
    return response
