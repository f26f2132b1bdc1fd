"""Safety rules at the REST API's door: ASIL-D rule deletion waits for approval; a key of a
deactivated user stops working.

Each test here was written against a deliberate break of the rule it names (the break is in
the commit message) and fails on it.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from accounts.models import ApiKey
from audit.models import AuditEntry
from flags.models import ChangeRequest, Flag, Rule
from tests.api.conftest import Api, error
from tests.factories import FlagFactory, RuleFactory, UserFactory, VehicleFactory

pytestmark = pytest.mark.django_db

VIN = "KMHXX00XXXX000001"


def test_rule_delete__asil_d__202_change_request_and_rule_kept(write_api: Api) -> None:
    # Given an ASIL-D flag with a targeting rule
    flag = FlagFactory(key="brake.v2", safety_level="ASIL_D")
    rule = RuleFactory(flag=flag, type="vehicle_whitelist", priority=5, conditions={"vins": [VIN]})
    trail = list(AuditEntry.objects.values_list("seq", flat=True))
    # When a WRITE key deletes the rule with a rationale
    response = write_api.delete(f"/api/v1/flags/brake.v2/rules/{rule.pk}/", {"rationale": "HARA-2026-017"})
    # Then 202 with the change request, and the rule and the flag are as they were
    assert response.status_code == 202
    request = ChangeRequest.objects.get()
    body = response.json()
    assert (body["id"], body["flag"], body["status"], body["operation"], body["base_version"], body["rationale"]) == \
        (request.pk, "brake.v2", "pending", "delete_rule", 1, "HARA-2026-017")
    assert ([r["id"] for r in body["before"]["rules"]], body["after"]["rules"]) == ([rule.pk], [])
    assert response["Location"] == f"/api/v1/change-requests/{request.pk}/"
    assert list(Rule.objects.values_list("pk", flat=True)) == [rule.pk]
    assert Flag.objects.get(key="brake.v2").version == 1
    assert list(AuditEntry.objects.exclude(seq__in=trail).values_list("action", flat=True)) == ["REQUEST_CHANGE"]


def test_rule_delete__non_critical__204_rule_gone(write_api: Api) -> None:
    # Given a non-critical flag with a rule
    flag = FlagFactory(key="ui.theme")
    rule = RuleFactory(flag=flag)
    # When a WRITE key deletes it
    response = write_api.delete(f"/api/v1/flags/ui.theme/rules/{rule.pk}/")
    # Then 204 and it is gone at once, with no change request
    assert (response.status_code, response.content) == (204, b"")
    assert not Rule.objects.exists()
    assert not ChangeRequest.objects.exists()


@pytest.mark.parametrize("url", ["/api/v1/flags/", f"/api/v1/vehicles/{VIN}/sync/"])
def test_request__key_of_deactivated_user__401_api_key_inactive_and_not_touched(
    make_api: Callable[..., Api], url: str
) -> None:
    # Given an ADMIN's own key, and the ADMIN has since left (deactivated)
    VehicleFactory(vin=VIN)
    admin = UserFactory(username="leaver", role="ADMIN")
    api = make_api("ADMIN", user=admin, name="leaver-script")
    admin.is_active = False
    admin.save(update_fields=["is_active"])
    # When the key is used
    response = api.get(url)
    # Then it is refused as inactive, and its use is not recorded
    assert response.status_code == 401
    assert error(response)["code"] == "api_key_inactive"
    assert error(response)["message"] == f"API key ffk_{api.key.key_prefix} is inactive"
    assert ApiKey.objects.get(pk=api.key.pk).last_used_at is None


def test_request__key_of_active_user__200(make_api: Callable[..., Api]) -> None:
    # Given an ADMIN's own key, the ADMIN still active
    admin = UserFactory(username="stayer", role="ADMIN")
    api = make_api("ADMIN", user=admin, name="stayer-script")
    # When the key is used, Then it works
    assert api.get("/api/v1/flags/").status_code == 200
