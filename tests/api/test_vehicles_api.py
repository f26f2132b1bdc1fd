"""Reading the vehicle registry over the API (registering and tokens: tests/vehicles/test_api.py)."""

from __future__ import annotations

import pytest

from tests.api.conftest import Api, error
from tests.factories import VehicleFactory
from vehicles.models import Vehicle

pytestmark = pytest.mark.django_db


def test_vehicles_list__filters__only_matching_and_paginated(read_api: Api) -> None:
    VehicleFactory(vin="KMHAAAAAAAA000001", model="ev6", region="eu-west", environment="production")
    VehicleFactory(vin="KMHAAAAAAAA000002", model="ev6", region="us-east", environment="staging")
    VehicleFactory(vin="KMHBBBBBBBB000003", model="ioniq5", region="eu-west", environment="production",
                   token_hash="a" * 64)
    response = read_api.get("/api/v1/vehicles/", model="ev6", region="eu-west")
    assert response.status_code == 200
    body = response.json()
    assert (body["count"], [v["vin"] for v in body["results"]]) == (1, ["KMHAAAAAAAA000001"])
    assert [v["vin"] for v in read_api.get("/api/v1/vehicles/", search="kmhb").json()["results"]] == [
        "KMHBBBBBBBB000003"]
    assert read_api.get("/api/v1/vehicles/", environment="staging").json()["count"] == 1
    every = read_api.get("/api/v1/vehicles/").json()["results"]
    assert all("token_hash" not in vehicle for vehicle in every)


def test_vehicles_list__unknown_status__400_naming_the_parameter(read_api: Api) -> None:
    response = read_api.get("/api/v1/vehicles/", status="parked")
    assert response.status_code == 400
    assert "status" in error(response)["fields"]


def test_vehicle_detail__registered__its_fields(read_api: Api) -> None:
    VehicleFactory(vin="KMHAAAAAAAA000009", model="gv60", sw_version="3.1.0", region="ap-northeast")
    body = read_api.get("/api/v1/vehicles/KMHAAAAAAAA000009/").json()
    assert (body["vin"], body["model"], body["sw_version"], body["region"]) == (
        "KMHAAAAAAAA000009", "gv60", "3.1.0", "ap-northeast")


def test_vehicle_detail__unknown__404_json_error(read_api: Api) -> None:
    response = read_api.get("/api/v1/vehicles/KMHZZZZZZZZ000000/")
    assert response.status_code == 404
    assert error(response)["code"] == "not_found"


def test_vehicles__no_key__401_and_incomplete_registration_400(admin_api: Api) -> None:
    assert Api(None).get("/api/v1/vehicles/").status_code == 401
    response = admin_api.post("/api/v1/vehicles/", {"vin": "KMHAAAAAAAA000010"})
    assert response.status_code == 400
    assert set(error(response)["fields"]) == {"model", "sw_version", "region"}
    assert not Vehicle.objects.exists()
