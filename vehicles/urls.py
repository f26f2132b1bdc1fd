"""The vehicles' ``/api/v1/`` routes (included by ``fleetflag.urls`` in the ``api`` namespace)."""

from __future__ import annotations

from django.urls import path

from vehicles import api

urlpatterns = [
    path("vehicles/", api.VehicleListView.as_view(), name="vehicle-list"),
    path("vehicles/<str:vin>/", api.VehicleDetailView.as_view(), name="vehicle-detail"),
    path("vehicles/<str:vin>/token/", api.VehicleTokenView.as_view(), name="vehicle-token"),
]
