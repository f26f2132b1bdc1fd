"""Registering vehicles and handling their tokens over the API: ADMIN only, token shown once."""

from __future__ import annotations

import json
from typing import Any

import pytest

from audit.models import AuditEntry
from tests.api.conftest import Api, error
from tests.factories import VehicleFactory
from vehicles import selectors, tokens
from vehicles.actions import VehicleAction
from vehicles.models import Vehicle

pytestmark = pytest.mark.django_db

VIN = "KMHAB81CBLU000001"
LIST = "/api/v1/vehicles/"
BODY = {"vin": VIN, "model": "ev6", "sw_version": "2.9.1", "region": "eu-west"}


def token_url(vin: str = VIN) -> str:
    return f"/api/v1/vehicles/{vin}/token/"


def test_register__admin__201_with_token_once_and_location(admin_api: Api) -> None:
    # When an ADMIN key registers a vehicle
    response = admin_api.post(LIST, {**BODY, "vin": VIN.lower(), "environment": "staging"})
    # Then 201 with the vehicle and its token, which opens the vehicle; not cached anywhere
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["vin"], body["environment"], body["token_state"]) == (VIN, "staging", "active")
    assert body["token"].startswith("ffv_")
    assert response["Location"] == f"/api/v1/vehicles/{VIN}/"
    assert response["Cache-Control"] == "no-store"
    assert selectors.vehicle_for_token(VIN, body["token"]).vin == VIN
    assert AuditEntry.objects.get(object_type="vehicle").action == VehicleAction.REGISTER_VEHICLE
    # And no GET shows the token or its hash again
    stored = Vehicle.objects.get()
    for url in (LIST, f"/api/v1/vehicles/{VIN}/"):
        text = admin_api.get(url).content.decode()
        assert body["token"] not in text and str(stored.token_hash) not in text and '"token"' not in text


def test_register__default_environment__production(admin_api: Api) -> None:
    assert admin_api.post(LIST, BODY).json()["environment"] == "production"


@pytest.mark.parametrize("role", ["READ", "WRITE"])
def test_register_rotate_revoke__read_or_write_key__403_and_nothing_changed(make_api: Any, role: str) -> None:
    # Given a registered vehicle with a token, and a key without ADMIN
    VehicleFactory(vin=VIN, token_hash=tokens.hash_token("ffv_" + "a" * 43))
    api = make_api(role, name=f"{role}-k")
    before = AuditEntry.objects.count()
    # When it registers, rotates or revokes, then 403 each time, and nothing changes
    for response in (api.post(LIST, {**BODY, "vin": "KMHAB81CBLU000002"}), api.post(token_url()),
                     api.delete(token_url())):
        assert response.status_code == 403, response.content
        assert error(response)["code"] == "permission_denied"
    assert Vehicle.objects.count() == 1
    assert Vehicle.objects.get().token_hash == tokens.hash_token("ffv_" + "a" * 43)
    assert AuditEntry.objects.count() == before


def test_register_rotate_revoke__safety_user_key__403(make_api: Any) -> None:
    from tests.factories import UserFactory

    api = make_api("READ", user=UserFactory(username="sam", role="SAFETY"), name="sam-key")
    assert api.post(LIST, BODY).status_code == 403
    assert not Vehicle.objects.exists()


def test_register__no_key__401(admin_api: Api) -> None:
    assert Api(None).post(LIST, BODY).status_code == 401
    assert Api("ffk_nope").post(LIST, BODY).status_code == 401
    assert not Vehicle.objects.exists()


def test_register__twice__409_vehicle_exists(admin_api: Api) -> None:
    first = admin_api.post(LIST, BODY).json()["token"]
    response = admin_api.post(LIST, {**BODY, "model": "gv60"})
    assert response.status_code == 409
    assert error(response)["code"] == "vehicle_exists"
    assert selectors.vehicle_for_token(VIN, first).model == "ev6"


@pytest.mark.parametrize(("body", "field"), [
    ({**BODY, "vin": "KMHAB81CBLU00000O"}, "vin"),
    ({**BODY, "vin": "x" * 10_000}, "vin"),
    ({**BODY, "vin": None}, "vin"),
    ({**BODY, "vin": 17}, "vin"),
    ({**BODY, "vin": ["KMHAB81CBLU000001"]}, "vin"),
    ({k: v for k, v in BODY.items() if k != "model"}, "model"),
    ({**BODY, "model": ""}, "model"),
    ({**BODY, "model": "ev\u00006"}, "model"),
    ({**BODY, "model": {"a": 1}}, "model"),
    ({**BODY, "region": "r" * 65}, "region"),
    ({**BODY, "region": "eu\u202ewest"}, "region"),  # a bidi override: not printable
    ({**BODY, "sw_version": "latest"}, "sw_version"),
    ({**BODY, "sw_version": 2.9}, "sw_version"),
    ({**BODY, "environment": "prod"}, "environment"),
    ({**BODY, "environment": None}, "environment"),
])
def test_register__bad_body__400_naming_the_field_and_nothing_written(admin_api: Api, body: dict[str, Any],
                                                                     field: str) -> None:
    response = admin_api.post(LIST, body)
    assert response.status_code == 400, response.content
    assert error(response)["code"] == "validation_error"
    assert field in error(response)["fields"]
    assert not Vehicle.objects.exists() and not AuditEntry.objects.filter(object_type="vehicle").exists()


@pytest.mark.parametrize("raw", [b"", b"[]", b"null", b"\"KMH\"", b"{", b"\xff\xfe", b'{"vin": "\\ud800"}',
                                 b'{"vin": "KMHAB81CBLU000001\\u0000"}'])
def test_register__hostile_body__4xx_never_5xx(admin_api: Api, raw: bytes) -> None:
    response = admin_api.client.post(LIST, data=raw, content_type="application/json",
                                     HTTP_AUTHORIZATION=f"Bearer {admin_api.raw}")
    assert 400 <= response.status_code < 500, response.content
    assert "error" in response.json()
    assert not Vehicle.objects.exists()


def test_register__huge_body__413(admin_api: Api) -> None:
    response = admin_api.post(LIST, {**BODY, "model": "x" * 5_000_000})
    assert response.status_code in (400, 413)
    assert not Vehicle.objects.exists()


def test_rotate__admin__200_new_token_old_refused(admin_api: Api) -> None:
    # Given a vehicle registered over the API
    old = admin_api.post(LIST, BODY).json()["token"]
    # When its token is rotated
    response = admin_api.post(token_url(VIN.lower()))
    # Then 200 with a new token that opens it; the old one no longer does
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["vin"], body["token_state"]) == (VIN, "active")
    assert body["token"] != old and response["Cache-Control"] == "no-store"
    assert selectors.vehicle_for_token(VIN, body["token"]).vin == VIN
    with pytest.raises(selectors.VehicleRefused):
        selectors.vehicle_for_token(VIN, old)


def test_revoke__admin__204_then_409_and_get_shows_revoked(admin_api: Api) -> None:
    token = admin_api.post(LIST, BODY).json()["token"]
    response = admin_api.delete(token_url())
    assert response.status_code == 204 and response.content == b""
    with pytest.raises(selectors.VehicleRefused):
        selectors.vehicle_for_token(VIN, token)
    detail = admin_api.get(f"/api/v1/vehicles/{VIN}/").json()
    assert detail["token_state"] == "revoked" and detail["token_revoked_at"] is not None
    again = admin_api.delete(token_url())
    assert again.status_code == 409 and error(again)["code"] == "no_vehicle_token"
    # A new token after a revocation: rotate
    assert admin_api.post(token_url()).json()["token_state"] == "active"


@pytest.mark.parametrize("vin", ["KMHAB81CBLU000009", "nope", "K" * 5000, "%F0%9F%9A%97", "%ED%A0%80"])
def test_token__unknown_vin__404(admin_api: Api, vin: str) -> None:
    for response in (admin_api.post(token_url(vin)), admin_api.delete(token_url(vin)),
                     admin_api.get(f"/api/v1/vehicles/{vin}/")):
        assert response.status_code == 404, (vin, response.status_code)
        assert error(response)["code"] == "not_found"


def test_token__nul_in_path__400_from_the_edge_nothing_changed(admin_api: Api) -> None:
    token = admin_api.post(LIST, BODY).json()["token"]
    for response in (admin_api.post(token_url("%00")), admin_api.delete(token_url(VIN + "%00"))):
        assert response.status_code == 400 and "error" in response.json()
    assert selectors.vehicle_for_token(VIN, token).vin == VIN


def test_token__get__405(admin_api: Api) -> None:
    admin_api.post(LIST, BODY)
    assert admin_api.get(token_url()).status_code == 405


def test_schema__vehicle_operations_documented(admin_api: Api) -> None:
    schema = json.loads(admin_api.get("/api/schema/", format="json").content)
    paths = schema["paths"]
    assert paths["/api/v1/vehicles/"]["post"]["operationId"] == "vehicles_register"
    assert set(paths["/api/v1/vehicles/{vin}/token/"]) >= {"post", "delete"}
    assert "409" in paths["/api/v1/vehicles/"]["post"]["responses"]
    assert "vehicle_exists" in paths["/api/v1/vehicles/"]["post"]["responses"]["409"]["description"]
    assert "token" in schema["components"]["schemas"]["VehicleCredential"]["properties"]
    assert "token" not in schema["components"]["schemas"]["Vehicle"]["properties"]
