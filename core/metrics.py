"""Prometheus metrics at ``/metrics`` (text exposition format 0.0.4), written by hand.

Counters are kept per process in memory and added into the cache about once a second
(Redis ``HINCRBYFLOAT`` in production, so every daphne process contributes to one total and
any process can answer a scrape; local memory in the embedded default). Gauges are given by
the caller (``fleetflag.health.metrics_view``) and read from the database at scrape time.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from core import redis

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
        batch = {_KEYS[name]: {k: float(v) for k, v in counter.items()} for name, counter in _pending.items() if counter}
        for name in _pending:
            _pending[name] = Counter()
        _last_flush = time.monotonic()
    if batch:
        redis.hash_add(batch)


def totals(name: str) -> dict[str, float]:
    return redis.hash_read(_KEYS[name])


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _line(name: str, labels: dict[str, Any], value: float) -> str:
    inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
    number = int(value) if float(value).is_integer() else value
    return f"{name}{{{inner}}} {number}" if inner else f"{name} {number}"


Family = tuple[str, str, list[tuple[dict[str, Any], float]]]


def render(gauges: list[Family]) -> str:
    """The exposition text: the shared counters, then ``gauges`` (name, help, samples) read now."""
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

    for name, help_text, samples in gauges:
        family(name, "gauge", help_text, samples)
    return "\n".join(out) + "\n"


def reset() -> None:
    """Tests: forget this process's pending counts."""
    with _lock:
        for name in _pending:
            _pending[name] = Counter()
