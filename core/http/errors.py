"""One JSON error format for the whole API, and the DRF exception handler that makes it.

    {"error": {"code": "validation_error", "message": "...", "fields": {"name": ["..."]},
               "request_id": "..."}}

Codes are stable (clients branch on them); messages are for people.
"""

from __future__ import annotations

import json
import math
from typing import Any

from django.core.exceptions import NON_FIELD_ERRORS, RequestDataTooBig
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, HttpResponse
from rest_framework import exceptions as drf
from rest_framework.response import Response

from core.errors import Code, ServiceError

_DRF_CODES = {
    drf.ParseError: Code.PARSE_ERROR,
    drf.NotAuthenticated: Code.NOT_AUTHENTICATED,
    drf.AuthenticationFailed: Code.NOT_AUTHENTICATED,
    drf.PermissionDenied: Code.PERMISSION_DENIED,
    drf.NotFound: Code.NOT_FOUND,
    drf.MethodNotAllowed: Code.METHOD_NOT_ALLOWED,
    drf.NotAcceptable: Code.NOT_ACCEPTABLE,
    drf.UnsupportedMediaType: Code.UNSUPPORTED_MEDIA_TYPE,
    drf.Throttled: Code.RATE_LIMITED,
}


class ApiError(drf.APIException):
    """An error with our code, raised by views and authentication."""

    def __init__(self, status: int, code: str, message: str, *, fields: dict[str, list[str]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message, code)
        self.status_code = status
        self.error_code = code
        self.message = message
        self.fields = fields
        self.headers = headers or {}


def error_body(code: str, message: str, *, request_id: str = "", fields: dict[str, Any] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if fields:
        error["fields"] = fields
    error["request_id"] = request_id
    return {"error": error}


def error_response(request: HttpRequest | None, status: int, code: str, message: str, *,
                   fields: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> HttpResponse:
    """The error as a plain Django response (for views and middleware outside DRF)."""
    body = error_body(code, message, request_id=getattr(request, "request_id", "") or "", fields=fields)
    response = HttpResponse(json.dumps(body), status=status, content_type="application/json", charset="utf-8")
    for name, value in (headers or {}).items():
        response[name] = value
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="fleetflag"'
    return response


def _field_messages(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [f"{k}: {m}" for k, v in value.items() for m in _field_messages(v)]
    if isinstance(value, (list, tuple)):
        return [m for item in value for m in _field_messages(item)]
    return [str(value)]


def _fields_from_drf(detail: Any) -> dict[str, list[str]]:
    if isinstance(detail, dict):
        return {("non_field_errors" if k == NON_FIELD_ERRORS else str(k)): _field_messages(v) for k, v in detail.items()}
    return {"non_field_errors": _field_messages(detail)}


def fields_from_django(exc: DjangoValidationError) -> dict[str, list[str]]:
    if hasattr(exc, "error_dict"):
        return {("non_field_errors" if k == NON_FIELD_ERRORS else k): list(v) for k, v in exc.message_dict.items()}
    return {"non_field_errors": list(exc.messages)}


def _summary(fields: dict[str, list[str]]) -> str:
    parts = [f"{name}: {messages[0]}" for name, messages in fields.items() if messages]
    return "invalid input — " + "; ".join(parts) if parts else "invalid input"


def describe(exc: Exception) -> tuple[int, str, str, dict[str, list[str]] | None, dict[str, str]] | None:
    """(status, code, message, fields, headers) for an exception the API knows, else None."""
    if isinstance(exc, ApiError):
        return exc.status_code, exc.error_code, exc.message, exc.fields, exc.headers
    if isinstance(exc, DjangoValidationError):
        fields = fields_from_django(exc)
        return 400, Code.VALIDATION_ERROR, _summary(fields), fields, {}
    if isinstance(exc, ServiceError):
        return exc.status, exc.code, exc.message, None, {}
    if isinstance(exc, RequestDataTooBig):
        return 413, Code.PAYLOAD_TOO_LARGE, "the request body is too large", None, {}
    if isinstance(exc, Http404):
        return 404, Code.NOT_FOUND, str(exc) or "not found", None, {}
    if isinstance(exc, DjangoPermissionDenied):
        return 403, Code.PERMISSION_DENIED, str(exc) or "permission denied", None, {}
    if isinstance(exc, drf.ValidationError):
        fields = _fields_from_drf(exc.detail)
        return 400, Code.VALIDATION_ERROR, _summary(fields), fields, {}
    if isinstance(exc, drf.Throttled):
        wait = max(1, math.ceil(getattr(exc, "wait", None) or 1))
        return 429, Code.RATE_LIMITED, f"rate limit exceeded; retry in {wait} s", None, {"Retry-After": str(wait)}
    if isinstance(exc, drf.APIException):
        known = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), None)
        codes = exc.get_codes()
        code: str = known if known is not None else codes if isinstance(codes, str) else "error"
        if isinstance(exc, drf.PermissionDenied) and "CSRF" in str(exc.detail):
            code = Code.CSRF_FAILED
        return exc.status_code, code, str(exc.detail), None, {}
    return None


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    described = describe(exc)
    if described is None:
        return None  # a bug: Django's handler500 answers (JSON under /api/)
    status, code, message, fields, headers = described
    request = context.get("request")
    body = error_body(code, message, request_id=getattr(request, "request_id", "") or "", fields=fields)
    response = Response(body, status=status, headers=headers)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="fleetflag"'
    return response


OFREP_PREFIX = "/ofrep/"


def edge_error_body(path: str, status: int, code: str, message: str, *, request_id: str,
                    fields: dict[str, Any] | None = None) -> dict[str, Any]:
    """An error the edge answers before any view: OFREP's own failure shape for a 400 under
    ``/ofrep/`` (its clients read ``errorCode``), the one error shape everywhere else."""
    if path.startswith(OFREP_PREFIX) and status == 400:
        return {"errorCode": "PARSE_ERROR" if code == Code.PARSE_ERROR else "INVALID_CONTEXT",
                "errorDetails": message}
    return error_body(code, message, request_id=request_id, fields=fields)
