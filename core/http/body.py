"""The one request parser: every JSON body (DRF views, the hot views, OFREP, the admin's
JSON fields) is read by ``parse_json``, and every path and query string is checked by
``check_text`` before a view sees it.

What it refuses, with a 400 in the one error format:

- bodies that are not JSON, not UTF-8, or nested deeper than ``API_MAX_JSON_DEPTH``
  (default 32) — ``parse_error``; Python's decoder would otherwise raise ``RecursionError``
  near depth 1000 (a 500), and anything deep that got through would do the same later
  (validation, ``json.dumps`` for the audit);
- NaN, Infinity and numbers out of float range — ``parse_error`` (not JSON; PostgreSQL
  refuses them);
- strings (keys or values) holding NUL or a lone surrogate, in bodies, paths and query
  strings — ``validation_error``: PostgreSQL cannot store NUL in text, and a lone surrogate
  cannot be encoded as UTF-8, so either would fail deep inside a write as a 500.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_to_bytes

from django.conf import settings

from core.errors import Code
from core.http.errors import ApiError

_NUL = "\x00"


def _bad_text(value: str) -> str | None:
    """What is wrong with a string, or None."""
    if _NUL in value:
        return "contains a NUL character"
    if value.isascii():
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (not encodable as UTF-8)"
    return None


def check_text(value: str, where: str) -> None:
    problem = _bad_text(value)
    if problem is not None:
        raise ApiError(400, Code.VALIDATION_ERROR, f"{where} {problem}", fields={where: [problem]})


def _walk(data: Any, limit: int) -> None:
    """Depth and strings of a parsed document, without recursion."""
    stack: list[tuple[Any, int, str]] = [(data, 1, "")]
    while stack:
        value, depth, where = stack.pop()
        if isinstance(value, dict):
            if depth > limit:
                raise ApiError(400, Code.PARSE_ERROR, f"the JSON is nested deeper than {limit} levels")
            for key, item in value.items():
                name = f"{where}.{key}" if where else str(key)
                problem = _bad_text(key)
                if problem is not None:
                    raise ApiError(400, Code.VALIDATION_ERROR, f"a key at {where or 'the top'} {problem}",
                                   fields={where or "non_field_errors": [f"a key {problem}"]})
                stack.append((item, depth + 1, name))
        elif isinstance(value, list):
            if depth > limit:
                raise ApiError(400, Code.PARSE_ERROR, f"the JSON is nested deeper than {limit} levels")
            stack.extend((item, depth + 1, f"{where}[{index}]") for index, item in enumerate(value))
        elif isinstance(value, str):
            problem = _bad_text(value)
            if problem is not None:
                field = where.split(".", 1)[0].split("[", 1)[0] or "non_field_errors"
                raise ApiError(400, Code.VALIDATION_ERROR, f"{where or 'the body'} {problem}",
                               fields={field: [problem]})


class _NotFinite(ValueError):
    pass


def _no_constant(name: str) -> Any:
    # NaN and Infinity are not JSON (RFC 8259); Python's decoder accepts them, PostgreSQL does not.
    raise _NotFinite(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _NotFinite(f"{text[:40]} is out of range for a number")
    return value


def parse_json(raw: bytes | str) -> Any:
    """The document, or ApiError 400 (parse_error, or validation_error for bad characters)."""
    try:
        data = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except _NotFinite as exc:
        raise ApiError(400, Code.PARSE_ERROR, f"the body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise ApiError(400, Code.PARSE_ERROR, f"the JSON is nested deeper than {max_depth()} levels") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, Code.PARSE_ERROR, f"the body is not valid JSON: {exc}") from exc
    limit = max_depth()
    # A str (the admin's fields) may hold any character: only pure ASCII takes the short cut.
    raw_bytes = (raw.encode("ascii") if raw.isascii() else b"\\u") if isinstance(raw, str) else raw
    # Without a \u escape no string can hold NUL or a lone surrogate (the decoder refuses raw
    # control characters, and strict UTF-8 refuses encoded surrogates), and with no more
    # brackets than the depth limit nothing can nest past it: then the walk has nothing to find.
    # (A NUL byte means UTF-16 or UTF-32, which the decoder also reads: always walk those.)
    if b"\\u" in raw_bytes or b"\x00" in raw_bytes or raw_bytes.count(b"[") + raw_bytes.count(b"{") > limit:
        _walk(data, limit)
    return data


def max_depth() -> int:
    return int(getattr(settings, "API_MAX_JSON_DEPTH", 32))


def target_problem(path: str, raw_query: bytes | str) -> ApiError | None:
    """NUL or undecodable text in the path or the query string (refused before any view)."""
    try:
        check_text(path, "path")
        if raw_query:
            raw = raw_query.encode("latin1") if isinstance(raw_query, str) else raw_query
            check_text(unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8"), "query")
    except UnicodeDecodeError:
        return ApiError(400, Code.VALIDATION_ERROR, "the query string is not valid UTF-8",
                        fields={"query": ["not valid UTF-8"]})
    except ApiError as exc:
        return exc
    return None
