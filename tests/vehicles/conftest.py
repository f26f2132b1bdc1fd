"""The vehicles tests share the API and admin fixtures (keys made through the service, logged-in clients)."""

from __future__ import annotations

from tests.admin.conftest import login  # noqa: F401 - fixtures
from tests.api.conftest import _fresh_api_state, admin_api, make_api, read_api, write_api  # noqa: F401 - fixtures
