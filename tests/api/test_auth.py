"""API keys: format, hashing, the command, authentication failures, roles, limits."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from accounts import keys
from accounts.models import ApiKey
from accounts.services import api_key_create, api_key_expire, api_key_revoke
from audit.models import AuditEntry
from core.actors import Actor
from flags.models import Flag
from tests.api.conftest import Api, error
from tests.factories import FlagFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_api_key_create__valid__only_hash_stored_and_audited() -> None:
    # Given an ADMIN user
    admin = UserFactory(username="root", role="ADMIN")
    # When they create a key
    key, raw = api_key_create(actor=Actor.for_user(admin), name="supplier-x", role="WRITE")
    # Then the key has the documented shape, only its SHA-256 is stored, and it is audited
    assert keys.KEY_RE.match(raw)
    assert raw.startswith(f"ffk_{key.key_prefix}_")
    stored = ApiKey.objects.get()
    assert stored.key_hash == keys.hash_key(raw)
    assert raw not in str(stored.__dict__)
    entry = AuditEntry.objects.get(action="CREATE_API_KEY")
    assert (entry.actor, entry.object_id, entry.after["prefix"]) == ("root", str(key.pk), key.key_prefix)
    assert raw not in str(entry.after)


def test_api_key_create__write_user_unbound_key__refused_and_nothing_saved() -> None:
    writer = UserFactory(username="w", role="WRITE")
    with pytest.raises(Exception) as caught:
        api_key_create(actor=Actor.for_user(writer), name="x", role="ADMIN")
    assert getattr(caught.value, "status", None) == 403
    assert not ApiKey.objects.exists()
    assert not AuditEntry.objects.exists()


def test_api_key_create__admin_binding_key_to_someone_else__refused() -> None:
    admin = UserFactory(username="root", role="ADMIN")
    safety = UserFactory(username="s1", role="SAFETY")
    with pytest.raises(Exception) as caught:
        api_key_create(actor=Actor.for_user(admin), name="x", user=safety)
    assert getattr(caught.value, "status", None) == 403
    assert not ApiKey.objects.exists()


def test_create_api_key_command__role__prints_key_alone_on_last_line() -> None:
    out = StringIO()
    call_command("create_api_key", "--name", "ci-bot", "--role", "WRITE", stdout=out)
    last = out.getvalue().strip().splitlines()[-1]
    assert keys.KEY_RE.match(last)
    key = ApiKey.objects.get(key_hash=keys.hash_key(last))
    assert (key.name, key.role, key.user_id) == ("ci-bot", "WRITE", None)


def test_create_api_key_command__user__key_bound_to_user() -> None:
    user = UserFactory(username="safety1", role="SAFETY")
    out = StringIO()
    call_command("create_api_key", "--name", "approver", "--user", "safety1", stdout=out)
    last = out.getvalue().strip().splitlines()[-1]
    assert ApiKey.objects.get(key_hash=keys.hash_key(last)).user_id == user.pk


def test_request__no_credentials__401_not_authenticated() -> None:
    response = Api(None).get("/api/v1/flags/")
    assert response.status_code == 401
    assert error(response)["code"] == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert error(response)["request_id"] == response["X-Request-ID"]


@pytest.mark.parametrize("url", ["/api/v1/flags/", "/api/v1/vehicles/KMHXX00XXXX000001/sync/"])
def test_request__unknown_key__401_invalid_api_key(url: str) -> None:
    response = Api("ffk_abcdefgh_" + "x" * 43).get(url)
    assert response.status_code == 401
    assert error(response)["code"] == "invalid_api_key"


def test_request__malformed_bearer__401_invalid_api_key() -> None:
    response = Api("not-a-key").get("/api/v1/flags/")
    assert (response.status_code, error(response)["code"]) == (401, "invalid_api_key")


def test_request__revoked_key__401_api_key_revoked_at_once(admin_api: Api) -> None:
    # Given a key that worked (so its lookup is cached)
    assert admin_api.get("/api/v1/flags/").status_code == 200
    # When it is revoked
    with_commit = api_key_revoke(actor=Actor.for_system("tests"), api_key=admin_api.key)
    assert with_commit.revoked_at is not None
    keys.forget(with_commit.key_hash)  # what on_commit does (the test transaction never commits)
    # Then it is refused with its own code
    response = admin_api.get("/api/v1/flags/")
    assert (response.status_code, error(response)["code"]) == (401, "api_key_revoked")
    assert AuditEntry.objects.filter(action="REVOKE_API_KEY", object_id=str(admin_api.key.pk)).count() == 1


def test_request__revoke__cache_dropped_on_commit(admin_api: Api, on_commit: Any) -> None:
    assert admin_api.get("/api/v1/flags/").status_code == 200
    with on_commit():
        api_key_revoke(actor=Actor.for_system("tests"), api_key=admin_api.key)
    assert error(admin_api.get("/api/v1/flags/"))["code"] == "api_key_revoked"


def test_request__expired_key__401_api_key_expired(make_api: Any, on_commit: Any) -> None:
    api = make_api("READ")
    with on_commit():
        api_key_expire(actor=Actor.for_system("tests"), api_key=api.key)
    response = api.get("/api/v1/flags/")
    assert (response.status_code, error(response)["code"]) == (401, "api_key_expired")


def test_request__key_past_expires_at__401_api_key_expired(make_api: Any) -> None:
    api = make_api("READ", expires_at=timezone.now() + timedelta(seconds=30))
    ApiKey.objects.filter(pk=api.key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = api.get("/api/v1/flags/")
    assert error(response)["code"] == "api_key_expired"


def test_request__inactive_key__401_api_key_inactive(make_api: Any) -> None:
    api = make_api("READ")
    ApiKey.objects.filter(pk=api.key.pk).update(is_active=False)
    assert error(api.get("/api/v1/flags/"))["code"] == "api_key_inactive"


def test_request__valid_key__last_used_at_written_once_per_minute(read_api: Api, django_assert_num_queries: Any) -> None:
    # Given a key never used
    assert ApiKey.objects.get(pk=read_api.key.pk).last_used_at is None
    # When it is used twice
    read_api.get("/api/v1/flags/")
    first = ApiKey.objects.get(pk=read_api.key.pk).last_used_at
    read_api.get("/api/v1/flags/")
    # Then last_used_at was set by the first request and not written again by the second
    assert first is not None
    assert ApiKey.objects.get(pk=read_api.key.pk).last_used_at == first


def test_write__read_key__403_and_nothing_created(read_api: Api) -> None:
    response = read_api.post("/api/v1/flags/", {"key": "a.b", "name": "AB"})
    # Refused at the API's door, before the service is reached (its refusal words differ)
    assert (response.status_code, error(response)["code"], error(response)["message"]) == (
        403, "permission_denied", "this API key or user may not do that")
    assert not Flag.objects.exists()


@pytest.mark.parametrize("method", ["head", "options"])
def test_read__read_key_head_or_options__answered_as_a_read(read_api: Api, method: str) -> None:
    FlagFactory(key="ui.dark-mode")
    response = getattr(read_api.client, method)("/api/v1/flags/", HTTP_AUTHORIZATION=f"Bearer {read_api.raw}")
    assert response.status_code == 200


def test_schema__security_schemes__bearer_key_and_staff_session_described(read_api: Api) -> None:
    schema = read_api.get("/api/schema/", format="json").json()
    assert schema["components"]["securitySchemes"] == {
        "ApiKey": {"type": "http", "scheme": "bearer", "bearerFormat": "ffk_<prefix>_<secret>",
                   "description": "An API key: `Authorization: Bearer ffk_...`"},
        "Session": {"type": "apiKey", "in": "cookie", "name": "sessionid",
                    "description": "The admin session (staff users); unsafe methods need the X-CSRFToken header."},
    }


def test_session__staff_user__reads_and_csrf_enforced_on_write(client: Any) -> None:
    user = UserFactory(username="writer", role="WRITE")
    client.force_login(user)
    assert client.get("/api/v1/flags/").status_code == 200
    csrf_client = type(client)(enforce_csrf_checks=True)
    csrf_client.force_login(user)
    response = csrf_client.post("/api/v1/flags/", data={"key": "a.b", "name": "AB"}, content_type="application/json")
    assert (response.status_code, response.json()["error"]["code"]) == (403, "csrf_failed")
    assert not Flag.objects.exists()


def test_session__non_staff_user__401(client: Any) -> None:
    user = UserFactory(username="plain", role="READ", is_staff=False)
    client.force_login(user)
    assert client.get("/api/v1/flags/").status_code == 401


def test_rate_limit__over_limit__429_with_retry_after(make_api: Any) -> None:
    # Given a key allowed 3 requests a minute
    api = make_api("READ", rate_limit_per_min=3)
    FlagFactory(key="x.y")
    statuses = [api.get("/api/v1/flags/").status_code for _ in range(3)]
    # When it makes a fourth
    response = api.get("/api/v1/flags/")
    # Then it is refused with Retry-After within the minute, in the JSON error format
    assert statuses == [200, 200, 200]
    assert response.status_code == 429
    assert error(response)["code"] == "rate_limited"
    assert 1 <= int(response["Retry-After"]) <= 60


def test_rate_limit__hot_path_over_limit__429(make_api: Any) -> None:
    api = make_api("READ", rate_limit_per_min=1)
    body = {"flag_key": "x", "vin": "KMHXX00XXXX000001"}
    assert api.post("/api/v1/evaluate/", body).status_code == 200
    response = api.post("/api/v1/evaluate/", body)
    assert response.status_code == 429
    assert int(response["Retry-After"]) >= 1


def test_rate_limit__redis__counter_shared_in_redis(require_redis: None, make_api: Any) -> None:
    from django.core.cache import caches

    api = make_api("READ", rate_limit_per_min=2)
    assert [api.get("/api/v1/flags/").status_code for _ in range(3)] == [200, 200, 429]
    backend = caches["default"]
    client = backend._cache.get_client()  # type: ignore[attr-defined]
    names = [n.decode() for n in client.keys(backend.make_and_validate_key(f"ff:rl:{api.key.pk}:*"))]
    assert len(names) == 1
    assert int(client.get(names[0])) == 3
    assert 0 < client.ttl(names[0]) <= 65


def test_body__over_limit__413_json_error(admin_api: Api, settings: Any) -> None:
    big = {"key": "big.flag", "name": "x" * (1024 * 1024 + 10)}
    response = admin_api.post("/api/v1/flags/", big)
    assert response.status_code == 413
    assert error(response)["code"] == "payload_too_large"
    assert not Flag.objects.exists()


def test_method__not_allowed__405_json(admin_api: Api) -> None:
    response = admin_api.client.put("/api/v1/change-requests/", HTTP_AUTHORIZATION=f"Bearer {admin_api.raw}")
    assert (response.status_code, error(response)["code"]) == (405, "method_not_allowed")
    response = admin_api.get("/api/v1/evaluate/")
    assert (response.status_code, error(response)["code"]) == (405, "method_not_allowed")


def test_api_path__unknown__404_json(admin_api: Api) -> None:
    response = admin_api.get("/api/v1/nothing-here/")
    assert (response.status_code, error(response)["code"]) == (404, "not_found")
