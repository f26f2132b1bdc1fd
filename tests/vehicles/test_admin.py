"""The vehicles admin: ADMIN registers (token shown once), rotates and revokes; everyone else reads."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse

from audit.models import AuditEntry
from core.actors import Actor
from tests.admin.conftest import messages_of
from tests.factories import VehicleFactory
from vehicles import selectors, services
from vehicles.actions import VehicleAction
from vehicles.models import Vehicle

pytestmark = pytest.mark.django_db

VIN = "KMHAB81CBLU000001"
ADD = reverse("admin:vehicles_vehicle_add")
LIST = reverse("admin:vehicles_vehicle_changelist")
FORM = {"vin": VIN.lower(), "model": "ev6", "sw_version": "2.9.1", "region": "eu-west", "environment": "staging"}


def registered(vin: str = VIN) -> str:
    _, token = services.vehicle_register(actor=Actor.for_system("tests"), vin=vin, model="ev6", sw_version="2.9.1",
                                         region="eu-west")
    return token


def test_add__admin__registers_and_shows_the_token_once(login: Any) -> None:
    # Given an ADMIN user on the add page
    client = login("ADMIN")
    assert client.get(ADD).status_code == 200
    # When they submit the registration form
    response = client.post(ADD, FORM)
    # Then the answering page shows the token with the warning, and the token opens the vehicle
    assert response.status_code == 200
    token = response.context["token"]
    html = response.content.decode()
    assert token in html and "it is not shown again" in html
    assert "no-store" in response["Cache-Control"]
    assert selectors.vehicle_for_token(VIN, token).environment == "staging"
    entry = AuditEntry.objects.get(object_type="vehicle")
    assert (entry.action, entry.actor, entry.ip) == (VehicleAction.REGISTER_VEHICLE, "admin-admin", "198.51.100.23")
    # And no later page shows it (not in a message, the list or the vehicle's page)
    for url in (LIST, reverse("admin:vehicles_vehicle_change", args=[VIN]), ADD):
        text = client.get(url).content.decode()
        assert token not in text and str(Vehicle.objects.get().token_hash) not in text
    assert all(token not in message for message in messages_of(response))


@pytest.mark.parametrize(("field", "value"), [("vin", "KMHAB81CBLU00000Q"), ("sw_version", "latest"),
                                              ("model", "ev\x006"), ("environment", "prod"), ("region", "")])
def test_add__bad_field__form_error_nothing_registered(login: Any, field: str, value: str) -> None:
    response = login("ADMIN").post(ADD, {**FORM, field: value})
    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors
    assert not Vehicle.objects.exists() and "token" not in response.context


def test_add__registered_vin__form_error_points_to_rotate(login: Any) -> None:
    token = registered()
    response = login("ADMIN").post(ADD, FORM)
    assert "Rotate token" in str(response.context["adminform"].form.errors["vin"])
    assert selectors.vehicle_for_token(VIN, token).model == "ev6"
    assert AuditEntry.objects.filter(object_type="vehicle").count() == 1


@pytest.mark.parametrize("role", ["READ", "WRITE", "SAFETY"])
def test_add_rotate_revoke__not_admin__403_nothing_changed(login: Any, role: str) -> None:
    # Given a vehicle with a token, and a user without ADMIN
    token = registered()
    client = login(role)
    # Then they may list and view, but not register, rotate or revoke
    assert client.get(LIST).status_code == 200
    page = client.get(reverse("admin:vehicles_vehicle_change", args=[VIN])).content.decode()
    assert "Rotate token" not in page and "Revoke token" not in page
    assert client.get(ADD).status_code == 403
    assert client.post(ADD, {**FORM, "vin": "KMHAB81CBLU000002"}).status_code == 403
    for name in ("admin:vehicles_vehicle_rotate", "admin:vehicles_vehicle_revoke"):
        assert client.post(reverse(name, args=[VIN])).status_code == 403
    response = client.post(LIST, {"action": "revoke_tokens", ACTION_CHECKBOX_NAME: [VIN], "_confirm": "1"})
    assert Vehicle.objects.count() == 1
    assert selectors.vehicle_for_token(VIN, token).vin == VIN
    assert response.status_code in (200, 302)


def test_rotate__confirm_then_post__new_token_shown_once_old_refused(login: Any) -> None:
    old = registered()
    client = login("ADMIN")
    url = reverse("admin:vehicles_vehicle_rotate", args=[VIN])
    page = client.get(reverse("admin:vehicles_vehicle_change", args=[VIN])).content.decode()
    assert url in page
    # When the confirmation page is shown, nothing changes yet
    confirm = client.get(url)
    assert confirm.status_code == 200 and "stops opening connections" in confirm.content.decode()
    assert selectors.vehicle_for_token(VIN, old).vin == VIN
    # When confirmed, the new token is on the answering page and the old one is refused
    response = client.post(url)
    new = response.context["token"]
    assert new in response.content.decode() and new != old
    assert selectors.vehicle_for_token(VIN, new).vin == VIN
    with pytest.raises(selectors.VehicleRefused):
        selectors.vehicle_for_token(VIN, old)
    assert AuditEntry.objects.filter(action=VehicleAction.ROTATE_VEHICLE_TOKEN).count() == 1


def test_revoke__button_confirm_then_post__revoked(login: Any) -> None:
    token = registered()
    client = login("ADMIN")
    url = reverse("admin:vehicles_vehicle_revoke", args=[VIN])
    assert "Revoke the token" in client.get(url).content.decode()
    assert selectors.vehicle_for_token(VIN, token).vin == VIN
    response = client.post(url, follow=True)
    assert f"{VIN}: token revoked." in messages_of(response)
    with pytest.raises(selectors.VehicleRefused):
        selectors.vehicle_for_token(VIN, token)
    # Revoked: the page offers Issue token, not Revoke
    page = client.get(reverse("admin:vehicles_vehicle_change", args=[VIN])).content.decode()
    assert "Issue token" in page and 'id="ff-revoke-link"' not in page


def test_revoke_action__confirmation_then_each_revoked_or_reported(login: Any) -> None:
    # Given two vehicles with tokens and one without
    first, second = registered(), registered("KMHAB81CBLU000002")
    VehicleFactory(vin="KMHAB81CBLU000003")
    client = login("ADMIN")
    chosen = [VIN, "KMHAB81CBLU000002", "KMHAB81CBLU000003"]
    # When the action is chosen, a confirmation page lists them and nothing changes yet
    confirm = client.post(LIST, {"action": "revoke_tokens", ACTION_CHECKBOX_NAME: chosen})
    assert confirm.status_code == 200 and "Revoke 3 token(s)" in confirm.content.decode()
    assert selectors.vehicle_for_token(VIN, first).vin == VIN
    # When confirmed, the two tokens are revoked and the third is reported
    response = client.post(LIST, {"action": "revoke_tokens", ACTION_CHECKBOX_NAME: chosen, "_confirm": "1"},
                           follow=True)
    texts = messages_of(response)
    assert f"{VIN}: token revoked." in texts
    assert any("KMHAB81CBLU000003" in text and "has no token" in text for text in texts)
    for vin, token in ((VIN, first), ("KMHAB81CBLU000002", second)):
        with pytest.raises(selectors.VehicleRefused):
            selectors.vehicle_for_token(vin, token)


def test_list__telemetry_columns_and_filters(login: Any) -> None:
    VehicleFactory(vin=VIN, model="ev6", region="us-east", sw_version="3.0.0", status="online",
                   environment="staging", agent_version="1.4.2", agent_memory_mb=42.5, agent_cpu_percent=3.25,
                   cache_size_mb=1.5)
    VehicleFactory(vin="KMHAB81CBLU000002", model="gv60", region="eu-west", status="offline")
    client = login("READ")
    response = client.get(LIST)
    html = response.content.decode()
    for column in ("agent_version", "agent_memory_mb", "agent_cpu_percent", "cache_size_mb", "status",
                   "last_seen_at", "token"):
        assert f"column-{column}" in html
    assert "1.4.2" in html and "42.5" in html
    titles = {spec.title for spec in response.context["cl"].filter_specs}
    assert titles >= {"model", "region", "sw version", "status", "environment", "token"}
    for params in ({"model": "ev6"}, {"region": "us-east"}, {"sw_version": "3.0.0"}, {"status__exact": "online"},
                   {"environment": "staging"}, {"token": "none"}):
        shown = [v.vin for v in client.get(LIST, params).context["cl"].result_list]
        assert VIN in shown and (shown == [VIN] or params == {"token": "none"}), params
