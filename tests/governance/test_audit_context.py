"""Audit entries carry who acted and from where: IP, user agent, request id (SPEC §3)."""

from __future__ import annotations

import pytest
from django.test import RequestFactory

from audit import services as audit
from audit.models import AuditEntry
from core.actors import Actor
from flags import services
from tests.factories import FlagFactory, UserFactory, actor

pytestmark = pytest.mark.django_db


def test_flag_change__entry_carries_ip_user_agent_request_id() -> None:
    who = Actor.for_user(UserFactory(username="dana", role="WRITE"), ip="192.0.2.10",
                         user_agent="FleetFlag-Admin/1.0 (Firefox)", request_id="6f1c2a9e")
    services.flag_create(actor=who, key="hvac.eco", name="Eco")
    entry = AuditEntry.objects.get(action="CREATE_FLAG")
    assert (entry.actor, entry.actor_type, entry.user_id, entry.ip, entry.user_agent, entry.request_id) == (
        "dana", "user", who.user.pk, "192.0.2.10", "FleetFlag-Admin/1.0 (Firefox)", "6f1c2a9e")
    assert entry.compute_hash() == entry.hash


def test_asil_d__request_and_approval__each_with_its_own_actor_meta() -> None:
    flag = FlagFactory(safety_level="ASIL_D", enabled=False)
    requester = Actor.for_user(UserFactory(username="req", role="WRITE"), ip="10.0.0.1", user_agent="ua-req",
                               request_id="r-1")
    approver = Actor.for_user(UserFactory(username="appr", role="SAFETY"), ip="10.0.0.2", user_agent="ua-appr",
                              request_id="r-2")
    request = services.flag_set_enabled(actor=requester, flag=flag, enabled=True, rationale="HARA").change_request
    services.change_request_approve(actor=approver, change_request=request)
    rows = list(AuditEntry.objects.order_by("seq").values_list("action", "actor", "ip", "user_agent", "request_id"))
    assert rows == [
        ("REQUEST_CHANGE", "req", "10.0.0.1", "ua-req", "r-1"),
        ("ENABLE_FLAG", "appr", "10.0.0.2", "ua-appr", "r-2"),
        ("APPROVE_CHANGE", "appr", "10.0.0.2", "ua-appr", "r-2"),
    ]


def test_actor_from_request__forwarded_ip_user_agent_request_id() -> None:
    http = RequestFactory().post("/admin/", HTTP_USER_AGENT="curl/8.5", HTTP_X_FORWARDED_FOR="203.0.113.5, 10.0.0.1",
                                 REMOTE_ADDR="10.0.0.1")
    http.user = UserFactory(username="ops", role="WRITE")
    http.request_id = "req-from-middleware"
    services.kill_switch_engage(actor=Actor.from_request(http), flag=FlagFactory(), reason="thermal")
    entry = AuditEntry.objects.get(action="KILL_SWITCH")
    assert (entry.ip, entry.user_agent, entry.request_id) == ("203.0.113.5", "curl/8.5", "req-from-middleware")


def test_api_key_actor__type_and_key_recorded() -> None:
    from accounts.services import api_key_create

    # (a real key: services refuse an actor whose key no longer exists or was revoked)
    key, _ = api_key_create(actor=Actor.for_system("tests"), name="tier1-bosch", role="WRITE")
    services.flag_create(actor=Actor.for_api_key(key, ip="198.51.100.4", request_id="k-1"), key="a.b", name="A")
    entry = AuditEntry.objects.get(action="CREATE_FLAG")
    assert (entry.actor_type, entry.actor, entry.api_key_id, entry.user_id, entry.ip, entry.request_id) == (
        "api_key", "api-key:tier1-bosch", key.pk, None, "198.51.100.4", "k-1")


def test_system_actor__no_request_meta() -> None:
    services.flag_create(actor=Actor.for_system("demo"), key="a.b", name="A")
    entry = AuditEntry.objects.get()
    assert (entry.actor_type, entry.ip, entry.user_agent, entry.request_id) == ("system", None, "", "")


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("10.1.2.3", "10.1.2.3"),
        (" 10.1.2.3 ", "10.1.2.3"),
        ("2001:0DB8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        ("::ffff:192.0.2.1", "::ffff:192.0.2.1"),
        ("not-an-ip", None),  # a forged X-Forwarded-For must not break the change it rides on
        ("", None),
    ],
)
def test_ip__stored_as_the_database_returns_it__chain_stays_valid(given: str, stored: str | None) -> None:
    who = Actor.for_user(actor("WRITE").user, ip=given)
    services.flag_create(actor=who, key="hvac.eco", name="Eco")
    entry = AuditEntry.objects.get()  # read back: PostgreSQL's inet normalises
    assert entry.ip == stored
    assert entry.compute_hash() == entry.hash
    assert audit.verify_chain().ok


def test_long_user_agent_and_request_id__truncated_not_refused() -> None:
    who = Actor.for_user(actor("WRITE").user, user_agent="x" * 2000, request_id="r" * 500)
    services.flag_create(actor=who, key="hvac.eco", name="Eco")
    entry = AuditEntry.objects.get()
    assert (len(entry.user_agent), len(entry.request_id)) == (512, 128)
    assert audit.verify_chain().ok
