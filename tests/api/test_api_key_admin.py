"""API keys in the admin: made through the service (shown once), listed by prefix, revoked by action."""

from __future__ import annotations

from typing import Any

import pytest

from accounts import keys
from accounts.models import ApiKey
from audit.models import AuditEntry
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_admin_add_api_key__admin_user__created_key_shown_once(client: Any) -> None:
    # Given an ADMIN user in the admin
    admin = UserFactory(username="root", role="ADMIN")
    client.force_login(admin)
    # When they add a key
    response = client.post("/admin/accounts/apikey/add/", {"name": "supplier-x", "role": "READ",
                                                            "rate_limit_per_min": 600}, follow=True)
    # Then it exists, the audit names the admin, and the page shows the raw key once
    key = ApiKey.objects.get()
    assert (key.name, key.role, key.rate_limit_per_min, key.created_by_id) == ("supplier-x", "READ", 600, admin.pk)
    shown = [str(m) for m in response.context["messages"]]
    raw = shown[0].rsplit(": ", 1)[1]
    assert keys.hash_key(raw) == key.key_hash
    assert AuditEntry.objects.get(action="CREATE_API_KEY").actor == "root"
    listing = client.get("/admin/accounts/apikey/").content.decode()
    assert f"ffk_{key.key_prefix}_" in listing
    assert raw not in listing


def test_admin_add_api_key__bound_to_someone_else__refused(client: Any) -> None:
    admin = UserFactory(username="root", role="ADMIN")
    other = UserFactory(username="safety1", role="SAFETY")
    client.force_login(admin)
    response = client.post("/admin/accounts/apikey/add/", {"name": "x", "role": "READ", "user": other.pk,
                                                            "rate_limit_per_min": 10})
    assert response.status_code == 200
    assert not ApiKey.objects.exists()


def test_admin_revoke_action__selected_keys__revoked_and_audited(client: Any, make_api: Any) -> None:
    admin = UserFactory(username="root", role="ADMIN")
    api = make_api("READ")
    client.force_login(admin)
    client.post("/admin/accounts/apikey/", {"action": "revoke_keys", "_selected_action": [api.key.pk]})
    key = ApiKey.objects.get(pk=api.key.pk)
    assert (key.is_active, key.revoked_at is not None) == (False, True)
    assert AuditEntry.objects.get(action="REVOKE_API_KEY").actor == "root"


def test_admin_delete__any_key__refused_key_kept(client: Any, make_api: Any) -> None:
    admin = UserFactory(username="root", role="ADMIN")
    api = make_api("READ")
    client.force_login(admin)
    assert client.post(f"/admin/accounts/apikey/{api.key.pk}/delete/").status_code == 403
    assert ApiKey.objects.filter(pk=api.key.pk).exists()
