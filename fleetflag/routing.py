"""Websocket routes. The vehicle channel (``/ws/vehicles/{vin}/``) arrives with the kill-switch issue."""

from typing import Any

websocket_urlpatterns: list[Any] = []
