"""``/api/v1/vehicles/``: the vehicle registry. Reading takes any role; registering a vehicle
and handling its token take ADMIN. Validate, call a service or a selector, answer.
(``vehicles/{vin}/sync/`` is flags' hot view.)

The token is in exactly two answers: the registration's ``201`` and the rotation's ``200``.
"""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.codes import KeyCode
from core.actors import ROLE_ADMIN, Actor
from core.environments import Environment
from core.errors import NotFound
from core.http.api import choice_param, error_responses, page
from vehicles import serializers as s
from vehicles import services
from vehicles.codes import VehicleCode
from vehicles.models import Vehicle

ENVIRONMENTS = list(Environment.values)
VEHICLE_STATUSES = ["online", "offline", "maintenance"]
ADMIN_ONLY = (ROLE_ADMIN,)


def _errors(*statuses: int) -> dict[int, OpenApiResponse]:
    return error_responses(*statuses, codes=[KeyCode, VehicleCode])


def _get(vin: str) -> Vehicle:
    clean = services.normal_vin(vin)
    vehicle = Vehicle.objects.filter(vin=clean).first() if clean else None
    if vehicle is None:
        raise NotFound(f"no vehicle {vin[:64]!r} is registered")
    return vehicle


def _with_token(vehicle: Vehicle, token: str) -> dict[str, Any]:
    return {**s.VehicleSerializer(vehicle).data, "token": token}


class VehicleListView(APIView):
    write_roles = ADMIN_ONLY

    @extend_schema(
        operation_id="vehicles_list",
        parameters=[
            OpenApiParameter("environment", str, enum=ENVIRONMENTS),
            OpenApiParameter("model", str),
            OpenApiParameter("region", str),
            OpenApiParameter("status", str, enum=VEHICLE_STATUSES),
            OpenApiParameter("search", str, description="VIN prefix"),
            OpenApiParameter("page", int),
            OpenApiParameter("page_size", int),
        ],
        responses={200: s.PaginatedVehicleSerializer, **_errors(400, 401, 403, 404, 429)},
    )
    def get(self, request: Request) -> Response:
        vehicles = Vehicle.objects.all()
        environment = choice_param(request, "environment", ENVIRONMENTS)
        if environment:
            vehicles = vehicles.filter(environment=environment)
        status_wanted = choice_param(request, "status", VEHICLE_STATUSES)
        if status_wanted:
            vehicles = vehicles.filter(status=status_wanted)
        for name in ("model", "region"):
            value = request.query_params.get(name, "").strip()
            if value:
                vehicles = vehicles.filter(**{name: value})
        search = request.query_params.get("search", "").strip().upper()
        if search:
            vehicles = vehicles.filter(vin__startswith=search)
        return page(request, self, vehicles.order_by("vin"), s.VehicleSerializer)

    @extend_schema(
        operation_id="vehicles_register",
        request=s.VehicleRegisterSerializer,
        responses={201: s.VehicleCredentialSerializer, **_errors(400, 401, 403, 409, 413, 429)},
        description="ADMIN. Registers the vehicle and answers its token once, as `token`: only its SHA-256 is "
                    "kept, so store it now. A VIN registered already is `409 vehicle_exists` (a new token for "
                    "it: `POST vehicles/{vin}/token/`).",
    )
    def post(self, request: Request) -> Response:
        data = s.VehicleRegisterSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        vehicle, token = services.vehicle_register(actor=Actor.from_request(request), **data.validated_data)
        return Response(_with_token(vehicle, token), status=status.HTTP_201_CREATED,
                        headers={"Location": reverse("api:vehicle-detail", args=[vehicle.vin]),
                                 "Cache-Control": "no-store"})


class VehicleDetailView(APIView):
    @extend_schema(operation_id="vehicles_retrieve", responses={200: s.VehicleSerializer, **_errors(401, 403, 404, 429)})
    def get(self, request: Request, vin: str) -> Response:
        return Response(s.VehicleSerializer(_get(vin)).data)


class VehicleTokenView(APIView):
    write_roles = ADMIN_ONLY

    @extend_schema(
        operation_id="vehicles_token_rotate", request=None,
        responses={200: s.VehicleCredentialSerializer, **_errors(401, 403, 404, 429)},
        description="ADMIN. A new token for the vehicle, answered once as `token`; the one it had stops opening "
                    "connections with this answer. Also issues a token to a vehicle without one (revoked, or "
                    "registered without).",
    )
    def post(self, request: Request, vin: str) -> Response:
        token = services.vehicle_token_rotate(actor=Actor.from_request(request), vin=vin)
        return Response(_with_token(_get(vin), token), headers={"Cache-Control": "no-store"})

    @extend_schema(
        operation_id="vehicles_token_revoke", request=None,
        responses={204: OpenApiResponse(description="Revoked: the token opens nothing from now on."),
                   **_errors(401, 403, 404, 409, 429)},
        description="ADMIN. Revoke the vehicle's token (`409 no_vehicle_token` when it has no live one). "
                    "A new one: `POST` here.",
    )
    def delete(self, request: Request, vin: str) -> Response:
        services.vehicle_token_revoke(actor=Actor.from_request(request), vin=vin)
        return Response(status=status.HTTP_204_NO_CONTENT)
