"""Errors the services raise and the codes clients branch on.

Services raise ``ServiceError`` subclasses (interfaces turn them into messages and status
codes); invalid input raises ``django.core.exceptions.ValidationError`` with a field dict.

Codes are stable (clients branch on them), one ``StrEnum`` per domain: ``Code`` here for
the edge, ``accounts.codes.KeyCode`` for keys, ``flags.codes.FlagCode`` for governance.
Each enum maps its members to their HTTP status with ``set_statuses``; the OpenAPI
descriptions (``core.http.api.error_responses``) are built from the same enums, so a code
used at a raise site is the code the schema documents.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

_STATUS: dict[str, int] = {}


class CodeEnum(StrEnum):
    """A domain's error codes; ``set_statuses`` gives each member its HTTP status."""

    @property
    def status(self) -> int:
        return _STATUS[str(self.value)]


def set_statuses(codes: type[CodeEnum], statuses: Mapping[str, int]) -> None:
    """Give every member of ``codes`` its status (all of them: a code without one is a bug)."""
    missing = {str(code.value) for code in codes} - set(statuses)
    if missing:
        raise ValueError(f"{codes.__name__}: no HTTP status for {', '.join(sorted(missing))}")
    _STATUS.update(statuses)


class Code(CodeEnum):
    VALIDATION_ERROR = "validation_error"
    PARSE_ERROR = "parse_error"
    NOT_AUTHENTICATED = "not_authenticated"
    PERMISSION_DENIED = "permission_denied"
    CSRF_FAILED = "csrf_failed"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    NOT_ACCEPTABLE = "not_acceptable"
    CONFLICT = "conflict"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"


set_statuses(Code, {
    "validation_error": 400, "parse_error": 400, "not_authenticated": 401, "permission_denied": 403,
    "csrf_failed": 403, "not_found": 404, "method_not_allowed": 405, "not_acceptable": 406, "conflict": 409,
    "payload_too_large": 413, "unsupported_media_type": 415, "rate_limited": 429, "server_error": 500,
})


class ServiceError(Exception):
    code: str = Code.VALIDATION_ERROR
    status = 400

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class PermissionDenied(ServiceError):
    code = Code.PERMISSION_DENIED
    status = 403


class NotFound(ServiceError):
    code = Code.NOT_FOUND
    status = 404


class Conflict(ServiceError):
    code = Code.CONFLICT
    status = 409
