from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from accounts import urls as accounts_urls
from audit import urls as audit_urls
from core.errors import Code
from core.http.errors import error_body
from flags.api import urls as flags_urls
from flags.api.urls import ofrep_urlpatterns
from fleetflag import health
from vehicles import urls as vehicles_urls


class SchemaView(SpectacularAPIView):
    """The OpenAPI schema: YAML, or JSON with ``?format=json`` (or ``Accept: application/json``).
    ``?format=`` is not DRF's format override here (``URL_FORMAT_OVERRIDE`` is off: the audit
    export owns that parameter), so the schema reads it itself."""

    def perform_content_negotiation(self, request: Any, force: bool = False) -> Any:
        wanted = request.query_params.get("format")
        if wanted in ("json", "yaml"):
            for renderer in self.get_renderers():
                if renderer.format == wanted:
                    return renderer, renderer.media_type
        return super().perform_content_negotiation(request, force)


urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics_view, name="metrics"),
    # One v1 router: each app routes its own part of /api/v1/.
    path("api/v1/", include(([*flags_urls.urlpatterns, *vehicles_urls.urlpatterns, *accounts_urls.urlpatterns,
                               *audit_urls.urlpatterns], "api"))),
    path("ofrep/v1/", include((ofrep_urlpatterns, "ofrep"))),
    path("api/schema/", SchemaView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="api-redoc"),
]


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith(("/api/", "/ofrep/"))


def handler400(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(error_body(Code.VALIDATION_ERROR, f"bad request: {exception or 'malformed'}",
                                       request_id=getattr(request, "request_id", "")), status=400)
    from django.views.defaults import bad_request

    return bad_request(request, exception or Exception("bad request"))


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(error_body(Code.NOT_FOUND, f"no endpoint {request.path}",
                                       request_id=getattr(request, "request_id", "")), status=404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception or Exception("not found"))


def handler500(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(error_body(Code.SERVER_ERROR, "internal error; quote the request id when reporting it",
                                       request_id=getattr(request, "request_id", "")), status=500)
    from django.views.defaults import server_error

    return server_error(request)
