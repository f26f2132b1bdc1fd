"""Fixtures for the API tests: keys made through the service, a client that sends them."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from accounts import keys, throttling
from accounts.services import api_key_create
from core import metrics
from core.actors import Actor
from flags.api import hot
from tests.factories import UserFactory
from vehicles import selectors as vehicle_selectors


@pytest.fixture(autouse=True)
def _fresh_api_state() -> Any:
    keys.forget_local()
    throttling.forget_local()
    vehicle_selectors.forget_local()
    hot.forget_local()
    metrics.reset()
    yield


class Api:
    """A test client bound to one API key; JSON in, parsed JSON out."""

    def __init__(self, raw: str | None, key: Any = None) -> None:
        self.raw = raw
        self.key = key
        self.client = Client()

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        headers = {"HTTP_AUTHORIZATION": f"Bearer {self.raw}"} if self.raw else {}
        for name, value in (extra or {}).items():
            headers["HTTP_" + name.upper().replace("-", "_")] = value
        return headers

    def get(self, url: str, headers: dict[str, str] | None = None, **params: Any) -> Any:
        return self.client.get(url, params, **self._headers(headers))

    def _send(self, method: str, url: str, body: Any, headers: dict[str, str] | None) -> Any:
        data = json.dumps(body) if body is not None else ""
        return getattr(self.client, method)(url, data=data, content_type="application/json", **self._headers(headers))

    def post(self, url: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        return self._send("post", url, body, headers)

    def patch(self, url: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        return self._send("patch", url, body, headers)

    def put(self, url: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        return self._send("put", url, body, headers)

    def delete(self, url: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        return self._send("delete", url, body, headers)


@pytest.fixture
def make_api(db: Any) -> Callable[..., Api]:
    def make(role: str = "ADMIN", *, user: Any = None, name: str | None = None, **fields: Any) -> Api:
        actor = Actor.for_user(user) if user is not None else Actor.for_system("tests")
        key, raw = api_key_create(actor=actor, name=name or f"{role.lower()}-key", role=role, user=user, **fields)
        return Api(raw, key)

    return make


@pytest.fixture
def admin_api(make_api: Callable[..., Api]) -> Api:
    return make_api("ADMIN", name="admin-key")


@pytest.fixture
def write_api(make_api: Callable[..., Api]) -> Api:
    return make_api("WRITE", name="write-key")


@pytest.fixture
def read_api(make_api: Callable[..., Api]) -> Api:
    return make_api("READ", name="read-key")


@pytest.fixture
def safety_api(make_api: Callable[..., Api]) -> Callable[[str], Api]:
    """A key bound to a SAFETY user (the user's roles apply)."""

    def make(username: str) -> Api:
        user = UserFactory(username=username, role="SAFETY")
        return make_api("READ", user=user, name=f"{username}-script")

    return make


def error(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = response.json()["error"]
    return body
