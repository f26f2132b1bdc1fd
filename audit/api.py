"""``/api/v1/audit-logs/``: the audit trail, filtered, paginated, or exported as CSV or JSON lines."""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import StreamingHttpResponse
from django.utils.dateparse import parse_datetime
from django.utils.timezone import is_naive, make_aware
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.views import APIView

from audit import services
from audit.serializers import AuditEntrySerializer, PaginatedAuditEntrySerializer
from core.errors import Code
from core.http.api import ErrorSerializer, Pagination, invalid
from core.http.errors import error_body

logger = logging.getLogger(__name__)

FORMATS = ("json", "csv", "jsonl")


def _when(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name, "").strip()
    if not raw:
        return None
    try:
        value = parse_datetime(raw.replace(" ", "+"))
    except ValueError:
        value = None
    if value is None:
        raise invalid(name, "an ISO 8601 date-time, e.g. 2026-11-23T08:00:00Z")
    return make_aware(value) if is_naive(value) else value


def _guarded(rows: Iterator[Any], fmt: str, request: Request) -> Iterator[Any]:
    """The export's rows; if reading fails part-way, one last row says so and the stream ends
    (the status line has gone out already, so the error travels in the body)."""
    try:
        yield from rows
    except Exception:
        request_id = getattr(request._request, "request_id", "")
        logger.exception("audit export failed (request %s)", request_id)
        message = "the export failed part-way and is incomplete; quote the request id when reporting it"
        if fmt == "csv":
            yield f"# error: {message} (request {request_id})\r\n"
        else:
            yield json.dumps(error_body(Code.SERVER_ERROR, message, request_id=request_id)) + "\n"


_BATCH = 256  # rows read per trip to the database thread


async def _streamed(rows: Iterator[Any]) -> AsyncIterator[Any]:
    """The rows as an async stream, read in batches in Django's sync thread. Under ASGI a
    plain iterator would be read whole into memory before the first byte is sent (Django
    does so to serve it asynchronously): seven years of audit in one response body."""

    def take() -> list[Any]:
        return list(itertools.islice(rows, _BATCH))

    while True:
        batch = await sync_to_async(take, thread_sensitive=True)()
        for row in batch:
            yield row
        if len(batch) < _BATCH:
            return


def _stream(rows: Iterator[Any], request: Request) -> Any:
    """What StreamingHttpResponse is given: async under ASGI, the plain iterator otherwise."""
    return _streamed(rows) if isinstance(request._request, ASGIRequest) else rows


class AuditLogView(APIView):
    @extend_schema(
        operation_id="audit_logs_list",
        parameters=[
            OpenApiParameter("since", OpenApiTypes.DATETIME, description="from this time (inclusive)"),
            OpenApiParameter("until", OpenApiTypes.DATETIME, description="before this time"),
            OpenApiParameter("flag", str, description="flag key"),
            OpenApiParameter("actor", str, description="as shown, e.g. api-key:ci-bot or alice"),
            OpenApiParameter("action", str, description="e.g. KILL_SWITCH, APPROVE_CHANGE, CREATE_API_KEY"),
            OpenApiParameter("request_id", str),
            OpenApiParameter("format", str, enum=FORMATS,
                             description="json (paginated, newest first) or a streamed export in chain order"),
            OpenApiParameter("page", int),
            OpenApiParameter("page_size", int),
        ],
        responses={
            (200, "application/json"): PaginatedAuditEntrySerializer,
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="CSV export"),
            (200, "application/x-ndjson"): OpenApiResponse(OpenApiTypes.STR, description="JSON lines export"),
            400: ErrorSerializer, 401: ErrorSerializer, 403: ErrorSerializer, 404: ErrorSerializer,
            429: ErrorSerializer,
        },
    )
    def get(self, request: Request) -> Any:
        fmt = request.query_params.get("format", "json") or "json"
        if fmt not in FORMATS:
            raise invalid("format", f"one of {', '.join(FORMATS)}")
        entries = services.filter_entries(
            since=_when(request, "since"),
            until=_when(request, "until"),
            flag_key=request.query_params.get("flag") or None,
            actor=request.query_params.get("actor") or None,
            action=request.query_params.get("action") or None,
        )
        request_id = request.query_params.get("request_id")
        if request_id:
            entries = entries.filter(request_id=request_id)
        if fmt == "csv":
            response = StreamingHttpResponse(_stream(_guarded(services.export_csv(entries), "csv", request), request),
                                             content_type="text/csv; charset=utf-8")
            response["Content-Disposition"] = 'attachment; filename="fleetflag-audit.csv"'
            return response
        if fmt == "jsonl":
            response = StreamingHttpResponse(_stream(_guarded(services.export_jsonl(entries), "jsonl", request), request),
                                             content_type="application/x-ndjson")
            response["Content-Disposition"] = 'attachment; filename="fleetflag-audit.jsonl"'
            return response
        paginator = Pagination()
        page: Any = paginator.paginate_queryset(entries.order_by("-seq"), request, view=self)
        return paginator.get_paginated_response(AuditEntrySerializer(page, many=True).data)


