"""``/api/v1/vehicles/``: the vehicle registry, read-only here (registration and vehicle
credentials arrive with the vehicle issue; ``vehicles/{vin}/sync/`` is flags' hot view)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.codes import KeyCode
from core.environments import Environment
from core.errors import NotFound
from core.http.api import choice_param, error_responses, page
from vehicles import serializers as s
from vehicles.models import Vehicle

ENVIRONMENTS = list(Environment.values)
VEHICLE_STATUSES = ["online", "offline", "maintenance"]


class VehicleListView(APIView):
    """Registered vehicles, read-only here: registration arrives with the vehicle issue."""

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
        responses={200: s.PaginatedVehicleSerializer, **error_responses(400, 401, 403, 404, 429, codes=[KeyCode])},
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


class VehicleDetailView(APIView):
    @extend_schema(operation_id="vehicles_retrieve", responses={200: s.VehicleSerializer, **error_responses(401, 403, 404, 429, codes=[KeyCode])})
    def get(self, request: Request, vin: str) -> Response:
        vehicle = Vehicle.objects.filter(vin=vin.upper()).first()
        if vehicle is None:
            raise NotFound(f"no vehicle {vin}")
        return Response(s.VehicleSerializer(vehicle).data)
