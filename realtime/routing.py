"""Websocket routes: the vehicle channel, and a clean refusal for every other path."""

from __future__ import annotations

from typing import Any

from django.urls import path, re_path

from realtime.consumers import VehicleSocket, refuse

websocket_urlpatterns: list[Any] = [
    path("ws/vehicles/<str:vin>/", VehicleSocket.as_asgi()),  # type: ignore[arg-type]
    # Anything else: the handshake is denied (HTTP 403), instead of URLRouter's error (HTTP 500).
    re_path(r"", refuse),  # type: ignore[arg-type]
]
