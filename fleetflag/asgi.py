import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleetflag.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from core.http.lane import hot_lane  # noqa: E402
from fleetflag import daphne_reaper  # noqa: E402
from fleetflag.routing import websocket_urlpatterns  # noqa: E402

daphne_reaper.install()

# hot_lane: bearer requests to the hot API views skip Django's per-request handler costs (flags/api/asgi.py).
application = ProtocolTypeRouter({"http": hot_lane(django_asgi_app), "websocket": URLRouter(websocket_urlpatterns)})
