"""Flags, rules, kill switches and change requests through the REST API."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group

from accounts import keys
from audit.models import AuditEntry
from flags.models import ChangeRequest, Flag, Rule
from tests.api.conftest import Api, error
from tests.factories import FlagFactory, VehicleFactory

pytestmark = pytest.mark.django_db

ASIL_D_RULE = {"type": "vehicle_whitelist", "conditions": {"vins": ["KMHXX00XXXX000001"]},
               "rationale": "HARA-2026-017"}


def test_flags_list__filters__only_matching_flags(read_api: Api) -> None:
    FlagFactory(key="a.one", environment="staging", enabled=True, safety_level="ASIL_B", name="Lane")
    FlagFactory(key="b.two", environment="production", enabled=False)
    FlagFactory(key="c.gone", archived_at="2026-01-01T00:00:00Z")
    assert [f["key"] for f in read_api.get("/api/v1/flags/").json()["results"]] == ["a.one", "b.two"]
    assert [f["key"] for f in read_api.get("/api/v1/flags/", environment="staging").json()["results"]] == ["a.one"]
    assert [f["key"] for f in read_api.get("/api/v1/flags/", enabled="false").json()["results"]] == ["b.two"]
    assert [f["key"] for f in read_api.get("/api/v1/flags/", safety_level="ASIL_B").json()["results"]] == ["a.one"]
    assert [f["key"] for f in read_api.get("/api/v1/flags/", search="lan").json()["results"]] == ["a.one"]
    assert [f["key"] for f in read_api.get("/api/v1/flags/", archived="true").json()["results"]] == ["c.gone"]
    body = read_api.get("/api/v1/flags/", page_size=1).json()
    assert (body["count"], len(body["results"]), body["next"] is not None) == (2, 1, True)


def test_flags_list__bad_filter__400_naming_field(read_api: Api) -> None:
    response = read_api.get("/api/v1/flags/", safety_level="ASIL_X")
    assert response.status_code == 400
    assert list(error(response)["fields"]) == ["safety_level"]


def test_flag_create__write_key__201_audited_with_key_and_request_id(write_api: Api) -> None:
    # Given a WRITE key, when it creates a flag with a request id
    response = write_api.post("/api/v1/flags/", {"key": "hvac.eco", "name": "Eco", "type": "string",
                                                 "default_value": "off"}, headers={"X-Request-ID": "req-123"})
    # Then the flag exists and the audit names the key and the request id
    assert response.status_code == 201
    assert (response.json()["key"], response.json()["version"], response.json()["default_value"]) == \
        ("hvac.eco", 1, "off")
    entry = AuditEntry.objects.get(action="CREATE_FLAG")
    assert (entry.actor_type, entry.actor, entry.api_key_id, entry.request_id) == \
        ("api_key", "api-key:write-key", write_api.key.pk, "req-123")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"key": "Bad Key", "name": "x"}, "key"),
        ({"key": "ok.key"}, "name"),
        ({"key": "ok.key", "name": "x", "type": "number", "default_value": "3"}, "default_value"),
        ({"key": "ok.key", "name": "x", "safety_level": "ASIL_X"}, "safety_level"),
        ({"key": "ok.key", "name": "x", "ttl_seconds": 5}, "ttl_seconds"),
        ({"key": "ok.key", "name": "x", "safety_level": "ASIL_D", "enabled": True}, "enabled"),
    ],
)
def test_flag_create__invalid__400_naming_field_nothing_saved(write_api: Api, body: dict, field: str) -> None:
    response = write_api.post("/api/v1/flags/", body)
    assert response.status_code == 400
    assert error(response)["code"] == "validation_error"
    assert field in error(response)["fields"]
    assert not Flag.objects.exists()
    assert not AuditEntry.objects.filter(action="CREATE_FLAG").exists()


def test_flag_create__duplicate__400_key(write_api: Api) -> None:
    FlagFactory(key="dup.key")
    response = write_api.post("/api/v1/flags/", {"key": "dup.key", "name": "x"})
    assert (response.status_code, list(error(response)["fields"])) == (400, ["key"])


def test_flag_create__not_json__400_parse_error(write_api: Api) -> None:
    response = write_api.client.post("/api/v1/flags/", data="{nope", content_type="application/json",
                                     HTTP_AUTHORIZATION=f"Bearer {write_api.raw}")
    assert (response.status_code, error(response)["code"]) == (400, "parse_error")


def test_flag_retrieve__unknown__404(read_api: Api) -> None:
    response = read_api.get("/api/v1/flags/no.such/")
    assert (response.status_code, error(response)["code"]) == (404, "not_found")


def test_flag_patch__non_critical__applied_version_bumped(write_api: Api) -> None:
    FlagFactory(key="a.b", enabled=False)
    response = write_api.patch("/api/v1/flags/a.b/", {"enabled": True})
    assert response.status_code == 200
    assert (response.json()["enabled"], response.json()["version"]) == (True, 2)
    assert AuditEntry.objects.get(flag_key="a.b").action == "ENABLE_FLAG"


def test_flag_put__missing_fields__400_naming_them(write_api: Api) -> None:
    FlagFactory(key="a.b")
    response = write_api.put("/api/v1/flags/a.b/", {"name": "New"})
    assert response.status_code == 400
    assert {"default_value", "enabled", "safety_level", "environment", "ttl_seconds"} <= set(error(response)["fields"])
    assert Flag.objects.get(key="a.b").version == 1


def test_flag_patch__type__400_immutable_nothing_changed(write_api: Api) -> None:
    FlagFactory(key="a.b")
    response = write_api.patch("/api/v1/flags/a.b/", {"key": "c.d"})
    assert response.status_code == 400
    assert Flag.objects.get(key="a.b").version == 1


def test_flag_patch__archived__409_archived(write_api: Api) -> None:
    FlagFactory(key="a.b", archived_at="2026-01-01T00:00:00Z")
    response = write_api.patch("/api/v1/flags/a.b/", {"name": "x"})
    assert (response.status_code, error(response)["code"]) == (409, "archived")


def test_flag_patch__asil_d__202_change_request_not_applied(write_api: Api) -> None:
    # Given an ASIL-D flag
    FlagFactory(key="brake.v2", safety_level="ASIL_D", enabled=False)
    # When a WRITE key enables it with a rationale
    response = write_api.patch("/api/v1/flags/brake.v2/", {"enabled": True, "rationale": "SC-BRK-004"})
    # Then 202 with the change request; the flag is unchanged
    assert response.status_code == 202
    body = response.json()
    request = ChangeRequest.objects.get()
    assert (body["id"], body["status"], body["operation"], body["base_version"], body["rationale"]) == \
        (request.pk, "pending", "enable_flag", 1, "SC-BRK-004")
    assert (body["before"]["enabled"], body["after"]["enabled"]) == (False, True)
    assert body["links"]["approve"] == f"/api/v1/change-requests/{request.pk}/approve/"
    assert response["Location"] == f"/api/v1/change-requests/{request.pk}/"
    assert Flag.objects.get(key="brake.v2").enabled is False


def test_flag_patch__asil_d_without_rationale__400_rationale(write_api: Api) -> None:
    FlagFactory(key="brake.v2", safety_level="ASIL_D", enabled=False)
    response = write_api.patch("/api/v1/flags/brake.v2/", {"enabled": True})
    assert (response.status_code, list(error(response)["fields"])) == (400, ["rationale"])
    assert not ChangeRequest.objects.exists()


def test_change_request_approve__other_safety_users_key__applied(write_api: Api, safety_api: Any) -> None:
    # Given a pending ASIL-D change made by a WRITE key
    FlagFactory(key="brake.v2", safety_level="ASIL_D", enabled=False)
    cr = write_api.patch("/api/v1/flags/brake.v2/", {"enabled": True, "rationale": "SC-BRK-004"}).json()
    # When a SAFETY engineer's key approves it
    approver = safety_api("safety1")
    response = approver.post(f"/api/v1/change-requests/{cr['id']}/approve/", {"comment": "checked"})
    # Then the change is applied and the approval is audited under the key, for the user
    assert response.status_code == 200
    assert response.json()["change_request"]["status"] == "approved"
    assert (response.json()["flag"]["enabled"], response.json()["flag"]["version"]) == (True, 2)
    entry = AuditEntry.objects.get(action="APPROVE_CHANGE")
    assert (entry.actor, entry.api_key_id, entry.user_id) == \
        ("api-key:safety1-script for safety1", approver.key.pk, approver.key.user_id)


def test_change_request_approve__requesters_own_key__403_not_applied(safety_api: Any) -> None:
    # Given a SAFETY engineer who requested a change through their key
    FlagFactory(key="brake.v2", safety_level="ASIL_D", enabled=False)
    own = safety_api("safety1")
    own.key.user.groups.add(Group.objects.get(name="WRITE"))  # so they may also propose changes
    keys.forget(own.key.key_hash)  # the key's roles are cached
    cr = own.patch("/api/v1/flags/brake.v2/", {"enabled": True, "rationale": "SC-BRK-004"}).json()
    # When the same person approves it
    response = own.post(f"/api/v1/change-requests/{cr['id']}/approve/", {})
    # Then refused; nothing applied
    assert (response.status_code, error(response)["code"]) == (403, "permission_denied")
    assert ChangeRequest.objects.get().status == "pending"
    assert Flag.objects.get(key="brake.v2").enabled is False


def test_change_request_approve__unbound_admin_key__403(write_api: Api, admin_api: Api) -> None:
    FlagFactory(key="brake.v2", safety_level="ASIL_D", enabled=False)
    cr = write_api.patch("/api/v1/flags/brake.v2/", {"enabled": True, "rationale": "x"}).json()
    response = admin_api.post(f"/api/v1/change-requests/{cr['id']}/approve/", {})
    assert response.status_code == 403
    assert ChangeRequest.objects.get().status == "pending"


def test_change_request_approve__flag_changed_since__409_stale(write_api: Api, safety_api: Any, admin_api: Api) -> None:
    FlagFactory(key="brake.v2", safety_level="ASIL_D", enabled=False)
    cr = write_api.patch("/api/v1/flags/brake.v2/", {"enabled": True, "rationale": "x"}).json()
    admin_api.post("/api/v1/flags/brake.v2/kill-switch/", {"reason": "field issue"})
    response = safety_api("safety1").post(f"/api/v1/change-requests/{cr['id']}/approve/", {})
    assert (response.status_code, error(response)["code"]) == (409, "stale")
    assert ChangeRequest.objects.get().status == "pending"


def test_change_request_reject__without_reason__400_reason(write_api: Api, safety_api: Any) -> None:
    FlagFactory(key="brake.v2", safety_level="ASIL_D", enabled=False)
    cr = write_api.patch("/api/v1/flags/brake.v2/", {"enabled": True, "rationale": "x"}).json()
    approver = safety_api("safety1")
    response = approver.post(f"/api/v1/change-requests/{cr['id']}/reject/", {})
    assert (response.status_code, list(error(response)["fields"])) == (400, ["reason"])
    response = approver.post(f"/api/v1/change-requests/{cr['id']}/reject/", {"reason": "no evidence"})
    assert (response.status_code, response.json()["status"], response.json()["decision_comment"]) == \
        (200, "rejected", "no evidence")
    again = approver.post(f"/api/v1/change-requests/{cr['id']}/reject/", {"reason": "again"})
    assert (again.status_code, error(again)["code"]) == (409, "already_decided")


def test_change_request_withdraw__requester__withdrawn_others_403(write_api: Api, admin_api: Api) -> None:
    FlagFactory(key="brake.v2", safety_level="ASIL_D", enabled=False)
    cr = write_api.patch("/api/v1/flags/brake.v2/", {"enabled": True, "rationale": "x"}).json()
    assert admin_api.post(f"/api/v1/change-requests/{cr['id']}/withdraw/").status_code == 403
    response = write_api.post(f"/api/v1/change-requests/{cr['id']}/withdraw/")
    assert (response.status_code, response.json()["status"]) == (200, "withdrawn")


def test_change_requests_list__filters__status_flag_mine(write_api: Api, admin_api: Api) -> None:
    FlagFactory(key="a.d", safety_level="ASIL_D", enabled=False)
    FlagFactory(key="b.d", safety_level="ASIL_D", enabled=False)
    write_api.patch("/api/v1/flags/a.d/", {"enabled": True, "rationale": "x"})
    admin_api.patch("/api/v1/flags/b.d/", {"enabled": True, "rationale": "y"})
    assert write_api.get("/api/v1/change-requests/").json()["count"] == 2
    assert [c["flag"] for c in write_api.get("/api/v1/change-requests/", flag="b.d").json()["results"]] == ["b.d"]
    assert [c["flag"] for c in write_api.get("/api/v1/change-requests/", mine="true").json()["results"]] == ["a.d"]
    assert write_api.get("/api/v1/change-requests/", status="approved").json()["count"] == 0
    assert write_api.get("/api/v1/change-requests/", status="pending").json()["count"] == 2
    missing = write_api.get("/api/v1/change-requests/999999/")
    assert (missing.status_code, error(missing)["code"]) == (404, "not_found")


def test_flag_delete__archives__200_archived(write_api: Api) -> None:
    FlagFactory(key="a.b")
    response = write_api.delete("/api/v1/flags/a.b/")
    assert (response.status_code, response.json()["archived"]) == (200, True)
    assert Flag.objects.get(key="a.b").archived_at is not None
    assert AuditEntry.objects.get(flag_key="a.b").action == "ARCHIVE_FLAG"


def test_rules__crud__created_updated_deleted(write_api: Api) -> None:
    FlagFactory(key="a.b")
    created = write_api.post("/api/v1/flags/a.b/rules/", {"type": "vehicle_whitelist", "priority": 5,
                                                          "conditions": {"vins": ["KMHXX00XXXX000001"]}})
    assert created.status_code == 201
    rule_id = created.json()["id"]
    assert [r["id"] for r in write_api.get("/api/v1/flags/a.b/rules/").json()] == [rule_id]
    assert write_api.get(f"/api/v1/flags/a.b/rules/{rule_id}/").json()["priority"] == 5
    updated = write_api.patch(f"/api/v1/flags/a.b/rules/{rule_id}/", {"enabled": False})
    assert (updated.status_code, updated.json()["enabled"]) == (200, False)
    deleted = write_api.delete(f"/api/v1/flags/a.b/rules/{rule_id}/")
    assert deleted.status_code == 204
    assert not Rule.objects.exists()
    assert Flag.objects.get(key="a.b").version == 4
    assert list(AuditEntry.objects.filter(flag_key="a.b").order_by("seq").values_list("action", flat=True)) == \
        ["CREATE_RULE", "UPDATE_RULE", "DELETE_RULE"]


def test_rule_create__bad_conditions__400_naming_conditions(write_api: Api) -> None:
    FlagFactory(key="a.b")
    response = write_api.post("/api/v1/flags/a.b/rules/", {"type": "percentage_rollout",
                                                           "conditions": {"rollout_percentage": 150}})
    assert response.status_code == 400
    assert "conditions" in error(response)["fields"]
    assert not Rule.objects.exists()


def test_rule_create__asil_d__202(write_api: Api) -> None:
    FlagFactory(key="brake.v2", safety_level="ASIL_D")
    response = write_api.post("/api/v1/flags/brake.v2/rules/", ASIL_D_RULE)
    assert (response.status_code, response.json()["operation"]) == (202, "create_rule")
    assert not Rule.objects.exists()


def test_rule__unknown__404(write_api: Api) -> None:
    FlagFactory(key="a.b")
    assert write_api.get("/api/v1/flags/a.b/rules/424242/").status_code == 404
    assert write_api.patch("/api/v1/flags/a.b/rules/424242/", {"enabled": False}).status_code == 404


def test_kill_switch__engage_state_lift__non_critical(write_api: Api) -> None:
    # Given a flag and two registered vehicles in its environment (one elsewhere)
    FlagFactory(key="a.b", environment="production")
    VehicleFactory.create_batch(2)
    VehicleFactory(environment="staging")
    # When the kill switch is engaged
    engaged = write_api.post("/api/v1/flags/a.b/kill-switch/", {"reason": "brake noise"})
    # Then 201 with the state and the delivery as far as it is known
    assert engaged.status_code == 201
    state = engaged.json()
    assert (state["engaged"], state["reason"], state["engaged_by"], state["flag_version"]) == \
        (True, "brake noise", "api-key:write-key", 2)
    assert state["delivery"]["targeted_vehicles"] == 2
    assert (state["delivery"]["acknowledged"], state["delivery"]["sent"]) == (0, 0)
    assert write_api.post("/api/v1/flags/a.b/kill-switch/", {"reason": "again"}).status_code == 200
    assert write_api.get("/api/v1/flags/a.b/kill-switch/").json()["engaged"] is True
    lifted = write_api.delete("/api/v1/flags/a.b/kill-switch/")
    assert (lifted.status_code, lifted.json()["engaged"]) == (200, False)
    again = write_api.delete("/api/v1/flags/a.b/kill-switch/")
    assert (again.status_code, error(again)["code"]) == (409, "not_killed")


def test_kill_switch__engage_without_reason__400_reason(write_api: Api) -> None:
    FlagFactory(key="a.b")
    response = write_api.post("/api/v1/flags/a.b/kill-switch/", {})
    assert (response.status_code, list(error(response)["fields"])) == (400, ["reason"])
    assert not Rule.objects.exists()


def test_kill_switch__asil_d__engages_at_once_lift_is_202(write_api: Api) -> None:
    FlagFactory(key="brake.v2", safety_level="ASIL_D")
    assert write_api.post("/api/v1/flags/brake.v2/kill-switch/", {"reason": "recall"}).status_code == 201
    response = write_api.delete("/api/v1/flags/brake.v2/kill-switch/", {"rationale": "fixed in 2.7"})
    assert (response.status_code, response.json()["operation"]) == (202, "lift_kill_switch")
    assert Rule.objects.get(type="kill_switch").enabled is True


def test_kill_switch__read_key__403_nothing_changed(read_api: Api) -> None:
    FlagFactory(key="a.b")
    response = read_api.post("/api/v1/flags/a.b/kill-switch/", {"reason": "x"})
    assert response.status_code == 403
    assert not Rule.objects.exists()


def test_flag_owned_by_team__write_key__403_permission_denied(write_api: Api) -> None:
    FlagFactory(key="a.b", owner_team=Group.objects.create(name="brakes"))
    response = write_api.patch("/api/v1/flags/a.b/", {"name": "x"})
    assert (response.status_code, error(response)["code"]) == (403, "permission_denied")
    assert Flag.objects.get(key="a.b").version == 1
