"""What every app's REST API shares: pagination, the error shape and its OpenAPI
descriptions, any-JSON fields, and query-parameter parsing with errors in the one format."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema_field
from rest_framework import serializers
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request

from core.errors import Code, CodeEnum
from core.http.errors import ApiError


class Pagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


def paginated(item: type[serializers.Serializer], name: str) -> type[serializers.Serializer]:
    """The page envelope of a list, for the schema: {count, next, previous, results}."""
    fields = {
        "count": serializers.IntegerField(),
        "next": serializers.URLField(allow_null=True),
        "previous": serializers.URLField(allow_null=True),
        "results": item(many=True),
    }
    return type(name, (serializers.Serializer,), fields)


@extend_schema_field(OpenApiTypes.ANY)
class AnyJSONField(serializers.JSONField):
    """Any JSON value (null included): flag values depend on the flag's type."""


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable, e.g. validation_error, invalid_api_key, stale, rate_limited.")
    message = serializers.CharField()
    fields = serializers.DictField(  # type: ignore[assignment]  # the error's "fields", not DRF's
        child=serializers.ListField(child=serializers.CharField()), required=False,
        help_text="Per field, what is wrong (validation errors).")
    request_id = serializers.CharField()


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


_TITLES = {400: "Invalid input", 401: "No or invalid credentials", 403: "Not allowed", 404: "Not found",
           405: "Method not allowed", 409: "Conflict", 413: "Body too large", 415: "Unsupported media type",
           429: "Rate limited (Retry-After header)"}


def error_responses(*statuses: int, codes: Iterable[type[CodeEnum]] = ()) -> dict[int, OpenApiResponse]:
    """OpenAPI responses for these statuses, each listing the codes it can carry (the edge's
    ``Code`` plus the domains' enums given), from the same enums the raise sites use."""
    enums: list[type[CodeEnum]] = [Code, *codes]
    out = {}
    for status in statuses:
        names = [str(member.value) for enum in enums for member in enum if member.status == status]
        title = _TITLES.get(status, f"HTTP {status}")
        out[status] = OpenApiResponse(ErrorSerializer, description=f"{title}: {', '.join(names)}")
    return out


BOOL_CHOICES = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def invalid(name: str, message: str) -> ApiError:
    return ApiError(400, Code.VALIDATION_ERROR, f"{name}: {message}", fields={name: [message]})


def bool_param(request: Request, name: str) -> bool | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    value = BOOL_CHOICES.get(raw.lower())
    if value is None:
        raise invalid(name, "expected true or false")
    return value


def choice_param(request: Request, name: str, choices: list[str]) -> str | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if raw not in choices:
        raise invalid(name, f"expected one of {', '.join(choices)}")
    return raw


def page(request: Request, view: Any, queryset: Any, serializer: type[serializers.Serializer]) -> Any:
    """One page of ``queryset`` in the envelope, serialized."""
    paginator = Pagination()
    rows: Any = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(serializer(rows, many=True).data)
