"""Prometheus metrics at ``/metrics`` (text exposition format 0.0.4), written by hand.

Counters are kept per process in memory and added into the cache about once a second
(Redis ``HINCRBYFLOAT`` in production, so every daphne process contributes to one total and
any process can answer a scrape; local memory in the embedded default). Gauges (flags by
safety level, pending change requests) are read from the database at scrape time.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

FLUSH_SECONDS = 1.0
_SEP = "\t"
_KEYS = {"requests": "ff:metrics:requests", "seconds": "ff:metrics:seconds", "evaluations": "ff:metrics:evaluations"}

_lock = threading.Lock()
_pending: dict[str, Counter[str]] = {name: Counter() for name in _KEYS}  # values may be float seconds
_last_flush = time.monotonic()


def count_request(route: str, method: str, status: int, seconds: float) -> None:
    labels = f"{route}{_SEP}{method}{_SEP}{status}"
    with _lock:
        _pending["requests"][labels] += 1
        _pending["seconds"][f"{route}{_SEP}{method}"] += seconds  # type: ignore[assignment]
    _maybe_flush()


def count_evaluations(n: int, api: str = "rest") -> None:
    with _lock:
        _pending["evaluations"][api] += n


def _maybe_flush() -> None:
    if time.monotonic() - _last_flush >= FLUSH_SECONDS:
        flush()


def flush() -> None:
    """Add this process's counts into the shared totals."""
    global _last_flush
    with _lock:
        batch = {name: counter for name, counter in _pending.items() if counter}
        for name in batch:
            _pending[name] = Counter()
        _last_flush = time.monotonic()
    if not batch:
        return
    backend = caches["default"]
    if isinstance(backend, RedisCache):
        client = backend._cache.get_client(write=True)
        pipe = client.pipeline(transaction=False)
        for name, counter in batch.items():
            full = backend.make_and_validate_key(_KEYS[name])
            for field, value in counter.items():
                pipe.hincrbyfloat(full, field, value)
        pipe.execute()
        return
    with _lock:
        for name, counter in batch.items():
            total: Counter[str] = backend.get(_KEYS[name]) or Counter()
            total.update(counter)
            backend.set(_KEYS[name], total, timeout=None)


def totals(name: str) -> dict[str, float]:
    backend = caches["default"]
    if isinstance(backend, RedisCache):
        client = backend._cache.get_client()
        raw: dict[Any, Any] = client.hgetall(backend.make_and_validate_key(_KEYS[name]))
        return {(k.decode() if isinstance(k, bytes) else str(k)): float(v) for k, v in raw.items()}
    return dict(backend.get(_KEYS[name]) or {})


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _line(name: str, labels: dict[str, Any], value: float) -> str:
    inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
    number = int(value) if float(value).is_integer() else value
    return f"{name}{{{inner}}} {number}" if inner else f"{name} {number}"


def render() -> str:
    from flags.models import ChangeRequest, Flag, SafetyLevel

    flush()
    out: list[str] = []

    def family(name: str, kind: str, help_text: str, samples: list[tuple[dict[str, Any], float]]) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(_line(name, labels, value) for labels, value in samples)

    requests = []
    for field, value in sorted(totals("requests").items()):
        route, method, status = field.split(_SEP)
        requests.append(({"route": route, "method": method, "status": status}, value))
    family("fleetflag_http_requests_total", "counter", "HTTP requests by route, method and status.", requests)
    seconds = []
    for field, value in sorted(totals("seconds").items()):
        route, method = field.split(_SEP)
        seconds.append(({"route": route, "method": method}, round(value, 6)))
    family("fleetflag_http_request_duration_seconds_total", "counter",
           "Time spent answering HTTP requests, by route and method.", seconds)
    evaluations = sorted(totals("evaluations").items())
    family("fleetflag_evaluations_total", "counter", "Flag evaluations served by the API, by API.",
           [({"api": api}, value) for api, value in evaluations])

    by_level = dict(Flag.objects.filter(archived_at__isnull=True).values_list("safety_level")
                    .annotate(n=Count("id")).values_list("safety_level", "n"))
    family("fleetflag_flags", "gauge", "Flags (not archived) by safety level.",
           [({"safety_level": level}, by_level.get(level, 0)) for level in SafetyLevel.values])
    pending = ChangeRequest.objects.filter(status=ChangeRequest.Status.PENDING, expires_at__gt=timezone.now()).count()
    family("fleetflag_change_requests_pending", "gauge", "ASIL-D change requests waiting for approval.",
           [({}, pending)])
    return "\n".join(out) + "\n"


def metrics_view(request: HttpRequest) -> HttpResponse:
    token = getattr(settings, "METRICS_TOKEN", "")
    if token and request.headers.get("Authorization", "") != f"Bearer {token}":
        return HttpResponse("unauthorized\n", status=401, content_type="text/plain")
    return HttpResponse(render(), content_type="text/plain; version=0.0.4; charset=utf-8")


def reset() -> None:
    """Tests: forget this process's pending counts."""
    with _lock:
        for name in _pending:
            _pending[name] = Counter()
