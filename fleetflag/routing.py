"""Websocket routes: the vehicle channel ``/ws/vehicles/{vin}/`` (``realtime``); every other
path is refused with a denied handshake."""

from realtime.routing import websocket_urlpatterns

__all__ = ["websocket_urlpatterns"]
