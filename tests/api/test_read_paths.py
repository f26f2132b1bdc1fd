"""Evaluate, batch, vehicle sync (ETag, 304 without the database), audit logs, metrics, OFREP, schema."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent_client.bucketing import bucket
from core.actors import Actor
from flags import services, snapshots
from tests.api.conftest import Api, error
from tests.factories import FlagFactory, RuleFactory, VehicleFactory

pytestmark = pytest.mark.django_db

VIN = "KMHXX00XXXX000001"
OTHER_VIN = "KMHXX00XXXX000009"


def _publish(*environments: str) -> None:
    for environment in environments or ("production",):
        snapshots.publish(environment)


@pytest.fixture
def targeted() -> None:
    flag = FlagFactory(key="nav.engine", type="string", default_value="classic", enabled=True)
    RuleFactory(flag=flag, type="vehicle_target", priority=10, value="graph-v2", variant="new",
                conditions={"models": ["ev6"], "regions": ["us-east"]})
    _publish()


def test_evaluate__registered_vehicle__context_filled_from_registry(read_api: Api, targeted: None) -> None:
    VehicleFactory(vin=VIN, model="ev6", region="us-east")
    response = read_api.post("/api/v1/evaluate/", {"flag_key": "nav.engine", "vin": VIN})
    assert response.status_code == 200
    assert response.json() == {"flag_key": "nav.engine", "value": "graph-v2", "variant": "new",
                               "reason": "TARGETING_MATCH", "version": 1}


def test_evaluate__unregistered_vehicle__context_from_body(read_api: Api, targeted: None) -> None:
    body = {"flag_key": "nav.engine", "vin": OTHER_VIN, "context": {"model": "ioniq5", "region": "us-east"}}
    assert read_api.post("/api/v1/evaluate/", body).json()["reason"] == "DEFAULT"
    body["context"]["model"] = "ev6"
    assert read_api.post("/api/v1/evaluate/", body).json()["value"] == "graph-v2"


def test_evaluate__unknown_flag__error_flag_not_found_with_default(read_api: Api, targeted: None) -> None:
    response = read_api.post("/api/v1/evaluate/", {"flag_key": "no.such", "vin": VIN, "default": 7})
    assert response.json() == {"flag_key": "no.such", "value": 7, "variant": None, "reason": "ERROR",
                               "version": None, "error_code": "FLAG_NOT_FOUND"}


def test_evaluate__unregistered_with_environment__that_environment(read_api: Api) -> None:
    FlagFactory(key="ota.window", type="string", default_value="night", enabled=False, environment="staging")
    _publish("staging", "production")
    body = {"flag_key": "ota.window", "vin": OTHER_VIN, "environment": "staging"}
    assert read_api.post("/api/v1/evaluate/", body).json()["reason"] == "DISABLED"
    body["environment"] = "production"
    assert read_api.post("/api/v1/evaluate/", body).json()["error_code"] == "FLAG_NOT_FOUND"


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"vin": VIN}, ["flag_key"]),
        ({"flag_key": "a.b", "vin": "short"}, ["vin"]),
        ({"flag_key": "a.b", "vin": VIN, "context": {"nested": {"a": 1}}}, ["context"]),
        ({"flag_key": "a.b", "vin": VIN, "environment": "prod"}, ["environment"]),
    ],
)
def test_evaluate__invalid__400_naming_fields(read_api: Api, body: dict, fields: list[str]) -> None:
    response = read_api.post("/api/v1/evaluate/", body)
    assert response.status_code == 400
    assert sorted(error(response)["fields"]) == fields


def test_evaluate__no_key__401(targeted: None) -> None:
    response = Api(None).post("/api/v1/evaluate/", {"flag_key": "nav.engine", "vin": VIN})
    assert (response.status_code, error(response)["code"]) == (401, "not_authenticated")


def test_evaluate_batch__all_flags__every_flag_for_vehicle(read_api: Api) -> None:
    FlagFactory(key="a.on", enabled=True)
    killed = FlagFactory(key="b.killed", enabled=True)
    services.kill_switch_engage(actor=Actor.for_system("t"), flag=killed, reason="x")
    roll = FlagFactory(key="c.roll", enabled=True)
    RuleFactory(flag=roll, type="percentage_rollout", priority=1, conditions={"rollout_percentage": 50})
    _publish()
    response = read_api.post("/api/v1/evaluate/batch/", {"vin": VIN, "context": {}})
    body = response.json()
    in_rollout = bucket("c.roll", "rollout", VIN) < 5000
    assert (body["vin"], body["environment"], body["version"]) == (VIN, "production", snapshots.document("production").version)
    assert body["flags"]["a.on"] == {"value": False, "variant": "default", "reason": "DEFAULT", "version": 1}
    assert body["flags"]["b.killed"]["reason"] == "KILL_SWITCH"
    assert body["flags"]["c.roll"]["reason"] == ("SPLIT" if in_rollout else "DEFAULT")


def test_evaluate_batch__flag_keys__only_those_and_unknown_marked(read_api: Api) -> None:
    FlagFactory(key="a.on", enabled=True)
    _publish()
    body = read_api.post("/api/v1/evaluate/batch/", {"vin": VIN, "flag_keys": ["a.on", "zz.none"]}).json()
    assert sorted(body["flags"]) == ["a.on", "zz.none"]
    assert body["flags"]["zz.none"]["error_code"] == "FLAG_NOT_FOUND"


def test_evaluate_batch__bad_flag_keys__400(read_api: Api) -> None:
    response = read_api.post("/api/v1/evaluate/batch/", {"vin": VIN, "flag_keys": "a.on"})
    assert list(error(response)["fields"]) == ["flag_keys"]


def test_sync__admin_key__snapshot_with_strong_etag(admin_api: Api) -> None:
    VehicleFactory(vin=VIN, environment="staging")
    FlagFactory(key="s.one", environment="staging")
    document = snapshots.publish("staging")
    response = admin_api.get(f"/api/v1/vehicles/{VIN}/sync/")
    assert response.status_code == 200
    assert response.content == document.body
    assert response["ETag"] == document.etag
    assert not response["ETag"].startswith("W/")
    assert response["Cache-Control"] == "no-cache"
    assert [f["key"] for f in json.loads(response.content)["flags"]] == ["s.one"]


def test_sync__current_etag__304_without_database(admin_api: Api, django_assert_num_queries: Any) -> None:
    # Given a vehicle that synced once (key, vehicle and snapshot now cached)
    VehicleFactory(vin=VIN)
    FlagFactory(key="p.one")
    etag = admin_api.get(f"/api/v1/vehicles/{VIN}/sync/")["ETag"]
    # When it polls with its ETag
    with django_assert_num_queries(0):
        response = admin_api.get(f"/api/v1/vehicles/{VIN}/sync/", headers={"If-None-Match": etag})
    # Then 304, empty, same ETag, and not one query
    assert (response.status_code, response.content, response["ETag"]) == (304, b"", etag)


def test_sync__after_change__200_new_etag(admin_api: Api, on_commit: Any) -> None:
    VehicleFactory(vin=VIN)
    flag = FlagFactory(key="p.one")
    etag = admin_api.get(f"/api/v1/vehicles/{VIN}/sync/")["ETag"]
    with on_commit():
        services.flag_update(actor=Actor.for_system("t"), flag=flag, changes={"name": "Renamed"})
    response = admin_api.get(f"/api/v1/vehicles/{VIN}/sync/", headers={"If-None-Match": etag})
    assert response.status_code == 200
    assert response["ETag"] != etag


def test_sync__read_key__403(read_api: Api) -> None:
    VehicleFactory(vin=VIN)
    response = read_api.get(f"/api/v1/vehicles/{VIN}/sync/")
    assert (response.status_code, error(response)["code"]) == (403, "permission_denied")


def test_sync__unknown_vehicle__404_and_bad_vin_400(admin_api: Api) -> None:
    assert error(admin_api.get(f"/api/v1/vehicles/{OTHER_VIN}/sync/"))["code"] == "not_found"
    response = admin_api.get("/api/v1/vehicles/nope/sync/")
    assert (response.status_code, list(error(response)["fields"])) == (400, ["vin"])


def test_sync__staff_session__200(client: Any) -> None:
    from tests.factories import UserFactory

    VehicleFactory(vin=VIN)
    client.force_login(UserFactory(username="reader", role="READ"))
    assert client.get(f"/api/v1/vehicles/{VIN}/sync/").status_code == 200


def test_audit_logs__filters_and_formats__matching_entries(write_api: Api, read_api: Api) -> None:
    write_api.post("/api/v1/flags/", {"key": "a.b", "name": "AB"}, headers={"X-Request-ID": "rq-1"})
    write_api.post("/api/v1/flags/", {"key": "c.d", "name": "CD"}, headers={"X-Request-ID": "rq-2"})
    page = read_api.get("/api/v1/audit-logs/", flag="a.b").json()
    assert [(e["action"], e["actor"], e["request_id"]) for e in page["results"]] == \
        [("CREATE_FLAG", "api-key:write-key", "rq-1")]
    assert read_api.get("/api/v1/audit-logs/", request_id="rq-2").json()["results"][0]["flag_key"] == "c.d"
    assert read_api.get("/api/v1/audit-logs/", action="CREATE_FLAG", actor="api-key:write-key").json()["count"] == 2
    assert read_api.get("/api/v1/audit-logs/", since="2999-01-01T00:00:00Z").json()["count"] == 0
    csv_response = read_api.get("/api/v1/audit-logs/", format="csv", flag="c.d")
    assert csv_response["Content-Type"].startswith("text/csv")
    lines = b"".join(csv_response.streaming_content).decode().strip().splitlines()
    assert lines[0].startswith("seq,created_at") and len(lines) == 2
    jsonl = read_api.get("/api/v1/audit-logs/", format="jsonl", action="CREATE_FLAG")
    rows = [json.loads(line) for line in b"".join(jsonl.streaming_content).decode().splitlines()]
    assert [r["flag_key"] for r in rows] == ["a.b", "c.d"]


def test_audit_logs__bad_since__400(read_api: Api) -> None:
    response = read_api.get("/api/v1/audit-logs/", since="yesterday")
    assert list(error(response)["fields"]) == ["since"]


def test_metrics__after_requests__prometheus_text(read_api: Api, targeted: None) -> None:
    read_api.post("/api/v1/evaluate/batch/", {"vin": VIN})
    read_api.get("/api/v1/flags/")
    FlagFactory(key="x.d", safety_level="ASIL_D")
    text = read_api.client.get("/metrics").content.decode()
    assert 'fleetflag_http_requests_total{route="api/v1/flags/",method="GET",status="200"} 1' in text
    assert 'fleetflag_http_requests_total{route="api/v1/evaluate/batch/",method="POST",status="200"} 1' in text
    assert 'fleetflag_evaluations_total{api="rest"} 1' in text
    assert 'fleetflag_flags{safety_level="ASIL_D"} 1' in text
    assert "fleetflag_change_requests_pending 0" in text


def test_ofrep__single__value_reason_variant(read_api: Api, targeted: None) -> None:
    VehicleFactory(vin=VIN, model="ev6", region="us-east")
    response = read_api.post("/ofrep/v1/evaluate/flags/nav.engine", {"context": {"targetingKey": VIN}})
    assert response.status_code == 200
    body = response.json()
    assert (body["key"], body["value"], body["reason"], body["variant"]) == \
        ("nav.engine", "graph-v2", "TARGETING_MATCH", "new")
    assert body["metadata"]["flagVersion"] == 1


def test_ofrep__unknown_flag__404_flag_not_found(read_api: Api, targeted: None) -> None:
    response = read_api.post("/ofrep/v1/evaluate/flags/no.such", {"context": {"targetingKey": VIN}})
    assert response.status_code == 404
    assert response.json() == {"key": "no.such", "errorCode": "FLAG_NOT_FOUND", "errorDetails": "flag no.such not found"}


@pytest.mark.parametrize(
    ("body", "code"),
    [({}, "TARGETING_KEY_MISSING"), ({"context": {"region": "x"}}, "TARGETING_KEY_MISSING"),
     ({"context": {"targetingKey": "short"}}, "INVALID_CONTEXT"),
     ({"context": {"targetingKey": VIN, "deep": {"a": 1}}}, "INVALID_CONTEXT")],
)
def test_ofrep__bad_context__400(read_api: Api, targeted: None, body: dict, code: str) -> None:
    response = read_api.post("/ofrep/v1/evaluate/flags/nav.engine", body)
    assert (response.status_code, response.json()["errorCode"]) == (400, code)


def test_ofrep__bulk__etag_and_304(read_api: Api, targeted: None) -> None:
    body = {"context": {"targetingKey": VIN, "model": "ev6", "region": "us-east"}}
    response = read_api.post("/ofrep/v1/evaluate/flags", body)
    assert response.status_code == 200
    assert response.json()["flags"][0]["key"] == "nav.engine"
    etag = response["ETag"]
    assert read_api.post("/ofrep/v1/evaluate/flags", body, headers={"If-None-Match": etag}).status_code == 304
    other = {"context": {"targetingKey": VIN, "model": "ioniq5"}}
    assert read_api.post("/ofrep/v1/evaluate/flags", other, headers={"If-None-Match": etag}).status_code == 200


def test_ofrep__kill_switch__disabled_reason_with_metadata(read_api: Api) -> None:
    flag = FlagFactory(key="k.one", enabled=True)
    services.kill_switch_engage(actor=Actor.for_system("t"), flag=flag, reason="x")
    _publish()
    body = read_api.post("/ofrep/v1/evaluate/flags/k.one", {"context": {"targetingKey": VIN}}).json()
    assert (body["value"], body["reason"], body["variant"], body["metadata"]["fleetflagReason"]) == \
        (False, "DISABLED", "killed", "KILL_SWITCH")


def test_schema__served__openapi_3_with_every_endpoint(client: Any) -> None:
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    schema = json.loads(response.content)
    assert schema["openapi"].startswith("3.")
    assert {"/api/v1/flags/", "/api/v1/evaluate/batch/", "/api/v1/vehicles/{vin}/sync/",
            "/api/v1/change-requests/{id}/approve/", "/ofrep/v1/evaluate/flags/{key}"} <= set(schema["paths"])
    assert schema["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"


def test_docs__swagger_ui__served_offline(client: Any) -> None:
    response = client.get("/api/docs/")
    assert response.status_code == 200
    assert b"swagger-ui" in response.content
    assert b"cdn" not in response.content.lower()


def test_evaluate_batch__same_question_after_change__new_answer(read_api: Api, on_commit: Any) -> None:
    # Given a batch answer given once (and kept for the snapshot)
    flag = FlagFactory(key="a.on", enabled=False)
    _publish()
    first = read_api.post("/api/v1/evaluate/batch/", {"vin": VIN}).json()
    # When the flag changes and the same question comes again
    with on_commit():
        services.flag_update(actor=Actor.for_system("t"), flag=flag, changes={"enabled": True})
    second = read_api.post("/api/v1/evaluate/batch/", {"vin": VIN}).json()
    # Then the answer is the new snapshot's
    assert (first["flags"]["a.on"]["reason"], second["flags"]["a.on"]["reason"]) == ("DISABLED", "DEFAULT")
    assert second["version"] > first["version"]


def _quick(raw: str, vin: str, if_none_match: str) -> Any:
    """The lane's cache-only answer of vehicle sync, as ``core.http.lane.HotLane`` asks for it."""
    from asgiref.sync import async_to_sync

    from flags.api import hot

    headers = {b"authorization": f"Bearer {raw}".encode(), b"if-none-match": if_none_match.encode()}
    return async_to_sync(hot.vehicle_sync.quick)(headers, {"vin": vin})


def test_sync_quick__warm_caches__decides_304_and_counts_once(admin_api: Api) -> None:
    VehicleFactory(vin=VIN)
    FlagFactory(key="p.one")
    etag = admin_api.get(f"/api/v1/vehicles/{VIN}/sync/")["ETag"]
    # cold: anything not in this process's caches lets the view answer
    assert _quick(admin_api.raw or "", "KMHXX00XXXX000007", etag) is None
    assert _quick(admin_api.raw or "", VIN, '"other"') is None
    assert _quick("ffk_nothere0_" + "x" * 43, VIN, etag) is None
    # warm: a 304 with no rate limit reached
    assert _quick(admin_api.raw or "", VIN, etag) == (304, [(b"ETag", etag.encode()), (b"Cache-Control", b"no-cache")], b"")


def test_sync_quick__read_key__refused_as_the_view_refuses(read_api: Api, admin_api: Api) -> None:
    from core.http.errors import ApiError

    VehicleFactory(vin=VIN)
    etag = admin_api.get(f"/api/v1/vehicles/{VIN}/sync/")["ETag"]
    read_api.get("/api/v1/flags/")  # the READ key is now cached too
    view_answer = read_api.get(f"/api/v1/vehicles/{VIN}/sync/", headers={"If-None-Match": etag})
    with pytest.raises(ApiError) as refused:
        _quick(read_api.raw or "", VIN, etag)
    assert (refused.value.status_code, refused.value.error_code) == (403, view_answer.json()["error"]["code"])
