"""``/api/v1/api-keys/``: list and read keys, revoke or expire one. Validate, call a service, answer.

Who sees a key is ``selectors.api_keys_visible_to`` (ADMIN: every key; anyone else: the keys
they may end); who may end it is ``services.may_end_key``, checked by the service.
"""

from __future__ import annotations

from collections.abc import Callable

from django.db.models import Q, QuerySet
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import selectors, services
from accounts.codes import KeyCode
from accounts.models import ApiKey
from accounts.permissions import ALL_ROLES
from accounts.serializers import KEY_STATES, ApiKeySerializer, PaginatedApiKeySerializer
from core.actors import Actor
from core.errors import Code
from core.http.api import Pagination, error_responses
from core.http.errors import ApiError


def _errors(*statuses: int) -> dict[int, OpenApiResponse]:
    return error_responses(*statuses, codes=[KeyCode])


def _state_filter(state: str) -> Q:
    now = timezone.now()
    live = Q(revoked_at__isnull=True)
    if state == "revoked":
        return Q(revoked_at__isnull=False)
    if state == "inactive":
        return live & Q(is_active=False)
    if state == "expired":
        return live & Q(is_active=True, expires_at__lte=now)
    return live & Q(is_active=True) & (Q(expires_at__isnull=True) | Q(expires_at__gt=now))


def _visible(request: Request, prefix: str) -> tuple[Actor, ApiKey]:
    actor = Actor.from_request(request)
    key = selectors.api_key_get(prefix=prefix)
    if not services.may_end_key(actor, key):
        raise ApiError(403, Code.PERMISSION_DENIED, f"{actor.label} may not see API key ffk_{key.key_prefix}")
    return actor, key


class ApiKeyListView(APIView):
    @extend_schema(
        operation_id="api_keys_list",
        parameters=[
            OpenApiParameter("state", str, enum=KEY_STATES),
            OpenApiParameter("search", str, description="in the name, the prefix and the bound user's name"),
            OpenApiParameter("page", int),
            OpenApiParameter("page_size", int),
        ],
        responses={200: PaginatedApiKeySerializer, **_errors(400, 401, 403, 404, 429)},
        description="ADMIN: every key. Anyone else: the keys bound to them or made by them (and the calling key).",
    )
    def get(self, request: Request) -> Response:
        found: QuerySet[ApiKey] = selectors.api_keys_visible_to(actor=Actor.from_request(request))
        state = request.query_params.get("state", "")
        if state:
            if state not in KEY_STATES:
                message = f"expected one of {', '.join(KEY_STATES)}"
                raise ApiError(400, Code.VALIDATION_ERROR, f"state: {message}", fields={"state": [message]})
            found = found.filter(_state_filter(state))
        search = request.query_params.get("search", "").strip()
        if search:
            found = found.filter(Q(name__icontains=search) | Q(key_prefix__icontains=search.removeprefix("ffk_"))
                                 | Q(user__username__icontains=search))
        paginator = Pagination()
        page = paginator.paginate_queryset(found.order_by("-created_at", "-id"), request, view=self)
        return paginator.get_paginated_response(ApiKeySerializer(page, many=True).data)


class ApiKeyDetailView(APIView):
    @extend_schema(operation_id="api_keys_retrieve",
                   responses={200: ApiKeySerializer, **_errors(401, 403, 404, 429)})
    def get(self, request: Request, prefix: str) -> Response:
        _, key = _visible(request, prefix)
        return Response(ApiKeySerializer(key).data)


def _ended(request: Request, prefix: str, end: Callable[..., ApiKey]) -> Response:
    actor, key = _visible(request, prefix)
    end(actor=actor, api_key=key)
    return Response(ApiKeySerializer(selectors.api_key_get(prefix=key.key_prefix)).data)


class ApiKeyRevokeView(APIView):
    # Any role may ask; the service decides (any ADMIN, the key's owner and creator, the key itself).
    write_roles = ALL_ROLES

    @extend_schema(
        operation_id="api_keys_revoke", request=None,
        responses={200: ApiKeySerializer, **_errors(401, 403, 404, 409, 429)},
        description="Revoke for good. Every server refuses the key within API_KEY_LOCAL_CACHE_SECONDS (2 s) "
                    "of this answer, and it can no longer decide change requests at once. Any ADMIN, the key's "
                    "bound user, its creator, or the key itself.",
    )
    def post(self, request: Request, prefix: str) -> Response:
        return _ended(request, prefix, services.api_key_revoke)


class ApiKeyExpireView(APIView):
    write_roles = ALL_ROLES

    @extend_schema(
        operation_id="api_keys_expire", request=None,
        responses={200: ApiKeySerializer, **_errors(401, 403, 404, 409, 429)},
        description="End the key's validity now (kept on record as expired). Who may: as for revoke.",
    )
    def post(self, request: Request, prefix: str) -> Response:
        return _ended(request, prefix, services.api_key_expire)


