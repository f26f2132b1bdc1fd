"""What the server serves is signed as SPEC §4 says: checked over the real ASGI application
with the key published by ``/api/v1/signing-keys/`` and the SPEC's recipe alone."""

from __future__ import annotations

import json
from typing import Any
from unittest.mock import patch

import pytest

from accounts.services import api_key_create
from core import signing
from core.actors import Actor
from flags import services, snapshots
from tests.asgi_client import asgi_request
from tests.factories import FlagFactory, RuleFactory, VehicleFactory
from tests.signing.conftest import spec_verify
from tests.signing.test_sign_verify import FLAG_UPDATE, KILL_SWITCH

pytestmark = pytest.mark.django_db

VIN = "KMHXX00XXXX000001"


def _auth(role: str) -> dict[str, str]:
    _, raw = api_key_create(actor=Actor.for_system("tests"), name=f"{role.lower()}-key", role=role)
    return {"Authorization": f"Bearer {raw}"}


def _published(auth: dict[str, str]) -> list[dict[str, Any]]:
    status, headers, body = asgi_request("GET", "/api/v1/signing-keys/", auth)
    assert (status, headers["content-type"]) == (200, "application/json"), body
    keys: list[dict[str, Any]] = json.loads(body)
    return keys


@pytest.fixture
def fleet() -> None:
    VehicleFactory(vin=VIN)
    flag = FlagFactory(key="hmi.greeting", type="string", default_value="Grüß Gott — ようこそ", enabled=True)
    RuleFactory(flag=flag, type="vehicle_target", priority=10, value="Hej", variant="nordic",
                conditions={"regions": ["eu-north"]})


def test_signing_keys__read_key__the_active_key_listed() -> None:
    keys = _published(_auth("READ"))
    assert keys == [{"kid": signing.keyring().active.kid, "algorithm": "Ed25519",
                     "public_key": signing.public_keys()[0]["public_key"], "active": True, "created_at": None}]


def test_signing_keys__no_credentials__401() -> None:
    status, _, body = asgi_request("GET", "/api/v1/signing-keys/")
    assert status == 401
    assert "kid" not in body.decode()


def test_sync_body__over_asgi__verifies_with_the_published_key_by_the_spec_recipe(fleet: None) -> None:
    # Given a vehicle's environment with a flag whose values are not ASCII
    auth = _auth("ADMIN")
    # When the vehicle syncs, and someone reads the published keys
    status, _, body = asgi_request("GET", f"/api/v1/vehicles/{VIN}/sync/", auth)
    published = _published(auth)
    # Then the body carries kid and sig, and verifies by the SPEC's recipe with a listed key
    assert status == 200
    snapshot = json.loads(body)
    assert snapshot["kid"] == published[0]["kid"]
    assert [flag["default_value"] for flag in snapshot["flags"]] == ["Grüß Gott — ようこそ"]
    assert spec_verify(snapshot, published) is True
    # and a changed byte of it does not
    assert spec_verify({**snapshot, "version": snapshot["version"] + 1}, published) is False


def test_sync_body__after_a_change__the_new_snapshot_verifies(fleet: None, on_commit: Any) -> None:
    auth = _auth("ADMIN")
    before = json.loads(asgi_request("GET", f"/api/v1/vehicles/{VIN}/sync/", auth)[2])
    with on_commit():
        services.flag_set_enabled(actor=Actor.for_system("tests"), flag="hmi.greeting", enabled=False)
    after = json.loads(asgi_request("GET", f"/api/v1/vehicles/{VIN}/sync/", auth)[2])
    assert after["version"] == before["version"] + 1
    assert after["sig"] != before["sig"]
    assert spec_verify(after, _published(auth)) is True


@pytest.mark.parametrize("frame", [KILL_SWITCH, FLAG_UPDATE], ids=["KILL_SWITCH", "FLAG_UPDATE"])
def test_frames__signed_by_core_signing__verify_with_the_published_key_by_the_spec_recipe(
        frame: dict[str, Any]) -> None:
    # Given a frame of each kind the server pushes, signed as the fan-out will sign it (once,
    # serialised), with a value that is not ASCII
    raw = signing.sign_bytes({**frame, "flag_key": "hmi.grüße"})
    # When a vehicle parses it and checks it with the published keys
    received = json.loads(raw.decode("utf-8"))
    # Then it verifies by the SPEC's recipe; tampered, it does not
    published = _published(_auth("READ"))
    assert received["kid"] == published[0]["kid"]
    assert spec_verify(received, published) is True
    assert spec_verify({**received, "flag_key": "hmi.grusse"}, published) is False
    assert spec_verify(signing.sign(frame), published) is True


def test_sync__many_requests__signed_once_at_publish_not_per_request(fleet: None) -> None:
    # Given a published snapshot
    auth = _auth("ADMIN")
    snapshots.publish("production")
    # When vehicles sync, with and without the current ETag
    with patch.object(signing, "sign", wraps=signing.sign) as sign:
        first = asgi_request("GET", f"/api/v1/vehicles/{VIN}/sync/", auth)
        for _ in range(5):
            assert asgi_request("GET", f"/api/v1/vehicles/{VIN}/sync/", auth)[2] == first[2]
            status, _, body = asgi_request("GET", f"/api/v1/vehicles/{VIN}/sync/",
                                           {**auth, "If-None-Match": first[1]["etag"]})
            assert (status, body) == (304, b"")
    # Then nothing was signed on the way: the body was signed when it was published
    assert sign.call_count == 0
    assert spec_verify(json.loads(first[2]), _published(auth)) is True


def test_sync__snapshot_published__signed_exactly_once(fleet: None) -> None:
    with patch.object(signing, "sign", wraps=signing.sign) as sign:
        snapshots.publish("production")
    assert sign.call_count == 1


def test_schema__signing_keys__documented_with_its_errors() -> None:
    status, _, body = asgi_request("GET", "/api/schema/?format=json")
    assert status == 200
    operation = json.loads(body)["paths"]["/api/v1/signing-keys/"]["get"]
    assert operation["operationId"] == "signing_keys_list"
    assert {"200", "401", "403", "429"} <= set(operation["responses"])
