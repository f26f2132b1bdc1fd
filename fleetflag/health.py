"""Probes and metrics: ``/healthz`` says the process lives; ``/readyz`` checks database, cache and
ClickHouse; ``/metrics`` is the Prometheus text."""

from __future__ import annotations

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse

from core import metrics


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        checks["database"] = f"error: {exc.__class__.__name__}"
    try:
        cache.set("readyz", "1", 5)
        checks["cache"] = "ok" if cache.get("readyz") == "1" else "error: no round trip"
    except Exception as exc:  # noqa: BLE001
        checks["cache"] = f"error: {exc.__class__.__name__}"
    from experiments import analytics

    if analytics.configured():
        try:
            analytics.ping()
            checks["analytics"] = "ok"
        except Exception as exc:  # noqa: BLE001
            checks["analytics"] = f"error: {exc.__class__.__name__}"
    ready = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """``/metrics``: the shared request and evaluation counters, and the flag gauges."""
    from flags import selectors

    token = getattr(settings, "METRICS_TOKEN", "")
    if token and request.headers.get("Authorization", "") != f"Bearer {token}":
        return HttpResponse("unauthorized\n", status=401, content_type="text/plain")
    return HttpResponse(metrics.render(selectors.gauges()), content_type="text/plain; version=0.0.4; charset=utf-8")
