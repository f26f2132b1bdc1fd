"""The two-person rule over the API counts the person who made the calling key, as the
service layer does (Actor.person_ids: the key's bound user and its creator)."""

from __future__ import annotations

import pytest

from accounts.services import api_key_create
from audit.models import AuditEntry
from core.actors import Actor
from flags import services
from flags.models import ChangeRequest, Flag
from tests.api.conftest import Api, error
from tests.factories import ApiKeyFactory, FlagFactory, UserFactory

pytestmark = pytest.mark.django_db

R = "HARA-2026-017"


def _request_by(user: object) -> ChangeRequest:
    flag = FlagFactory(key="brake.blend", safety_level="ASIL_D", enabled=False)
    request = services.flag_set_enabled(actor=Actor.for_user(user), flag=flag, enabled=True,
                                        rationale=R).change_request
    assert request is not None
    return request


def test_change_request_approve__key_made_by_requester_for_a_colleague__403_nothing_applied() -> None:
    # Given a request made in person, and a SAFETY colleague's key that the requester made
    requester = UserFactory(username="safety-writer", role="SAFETY,WRITE")
    request = _request_by(requester)
    key = ApiKeyFactory(user=UserFactory(username="safety-2", role="SAFETY"), created_by=requester)
    trail = list(AuditEntry.objects.values_list("seq", flat=True))
    # When the key approves the request over the API
    response = Api(f"ffk_{key.key_prefix}_{'x' * 43}").post(f"/api/v1/change-requests/{request.pk}/approve/", {})
    # Then the requester cannot approve through it: nothing applied, nothing audited
    assert response.status_code == 403
    assert error(response)["code"] == "permission_denied"
    request.refresh_from_db()
    assert (request.status, request.decided_by_id) == ("pending", None)
    assert Flag.objects.get(key="brake.blend").enabled is False
    assert list(AuditEntry.objects.exclude(seq__in=trail)) == []


def test_change_request_withdraw__unbound_key_made_by_requester__200_withdrawn() -> None:
    # Given an ADMIN's request made in person, and an unbound key the same ADMIN made
    admin = UserFactory(username="admin-1", role="ADMIN")
    request = _request_by(admin)
    _, raw = api_key_create(actor=Actor.for_user(admin), name="admin-script", role="ADMIN")
    # When the key withdraws the request over the API
    response = Api(raw).post(f"/api/v1/change-requests/{request.pk}/withdraw/", {})
    # Then it is withdrawn, as it would be through the services
    assert response.status_code == 200
    assert response.json()["status"] == "withdrawn"
