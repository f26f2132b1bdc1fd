"""Revoking and expiring API keys always works for the people who should be able to: any ADMIN,
the key's owner (its bound user), its creator — through the service, the command, the admin and
the API — and a revoked key, or a deactivated user's key, neither authenticates nor decides."""

from __future__ import annotations

from collections.abc import Callable
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command
from django.utils import timezone

from accounts import keys
from accounts.models import ApiKey
from accounts.services import api_key_create, api_key_expire, api_key_revoke, user_set_active
from audit.models import AuditEntry
from core.actors import Actor
from core.errors import Conflict, NotFound, PermissionDenied
from flags import services as flag_services
from flags.models import ChangeRequest, Flag
from tests.api.conftest import Api, error
from tests.factories import FlagFactory, UserFactory

pytestmark = pytest.mark.django_db

SYSTEM = Actor.for_system("tests")


def key_row(api: Api) -> tuple[bool, bool, Any]:
    """(is_active, revoked, expires_at) as stored."""
    key = ApiKey.objects.get(pk=api.key.pk)
    return key.is_active, key.revoked_at is not None, key.expires_at


def key_entries(api: Api) -> list[tuple[str, str]]:
    return list(AuditEntry.objects.filter(object_type="api_key", object_id=str(api.key.pk))
                .order_by("seq").values_list("action", "actor"))


@pytest.fixture
def safety_key(make_api: Callable[..., Api]) -> Api:
    """A SAFETY engineer's key, bound to them (it approves ASIL-D changes as them)."""
    engineer = UserFactory(username="safety1", role="SAFETY")
    return make_api("READ", user=engineer, name="safety1-approver")


# -- the service ---------------------------------------------------------------------------------


def test_api_key_revoke__admin_user_safety_engineers_bound_key__revoked_and_audited(safety_key: Api) -> None:
    # Given an ADMIN user and a key bound to a SAFETY engineer (the ADMIN could not have made it)
    admin = UserFactory(username="root", role="ADMIN")
    # When the ADMIN revokes it
    api_key_revoke(actor=Actor.for_user(admin), api_key=safety_key.key)
    # Then it is revoked, and the audit names the ADMIN with the key's state before and after
    assert key_row(safety_key)[:2] == (False, True)
    entry = AuditEntry.objects.get(action="REVOKE_API_KEY")
    assert (entry.actor, entry.object_id, entry.before["revoked_at"], entry.after["user"]) == (
        "root", str(safety_key.key.pk), None, "safety1")
    assert entry.after["revoked_at"] is not None


@pytest.mark.parametrize("who", ["superuser", "ADMIN key", "system"])
def test_api_key_revoke__any_admin__revoked(safety_key: Api, make_api: Callable[..., Api], who: str) -> None:
    # Given each kind of ADMIN
    actors = {
        "superuser": lambda: Actor.for_user(UserFactory(username="su", is_superuser=True)),
        "ADMIN key": lambda: Actor.for_api_key(make_api("ADMIN", name="ops").key),
        "system": lambda: Actor.for_system("ops"),
    }
    # When it revokes the SAFETY engineer's key
    api_key_revoke(actor=actors[who](), api_key=safety_key.key.pk)
    # Then the key is revoked
    assert key_row(safety_key)[:2] == (False, True)


def test_api_key_revoke__owner_own_key__revoked(safety_key: Api) -> None:
    # Given the SAFETY engineer the key is bound to, in person
    owner = Actor.for_user(safety_key.key.user)
    # When they revoke it
    api_key_revoke(actor=owner, api_key=safety_key.key)
    # Then it is revoked, audited as them
    assert key_row(safety_key)[:2] == (False, True)
    assert key_entries(safety_key)[-1] == ("REVOKE_API_KEY", "safety1")


def test_api_key_expire__owner_own_key__expired_not_revoked(safety_key: Api) -> None:
    before = timezone.now()
    api_key_expire(actor=Actor.for_user(safety_key.key.user), api_key=safety_key.key)
    is_active, revoked, expires_at = key_row(safety_key)
    assert (is_active, revoked) == (True, False)
    assert before <= expires_at <= timezone.now()
    assert key_entries(safety_key)[-1] == ("EXPIRE_API_KEY", "safety1")


def test_api_key_revoke__creator_no_longer_admin__revoked(make_api: Callable[..., Api]) -> None:
    # Given a key an ADMIN made, and the ADMIN then moved to WRITE
    creator = UserFactory(username="former-admin", role="ADMIN")
    api = make_api("WRITE", name="ci", user=None)
    ApiKey.objects.filter(pk=api.key.pk).update(created_by=creator)
    creator.groups.set([Group.objects.get(name="WRITE")])
    # When its creator revokes it
    api_key_revoke(actor=Actor.for_user(creator), api_key=api.key)
    # Then it is revoked
    assert key_row(api)[:2] == (False, True)
    assert key_entries(api)[-1] == ("REVOKE_API_KEY", "former-admin")


def test_api_key_revoke__the_key_itself__revoked(make_api: Callable[..., Api]) -> None:
    # Given an unbound READ key (a supplier's script that leaked)
    api = make_api("READ", name="supplier")
    # When the key revokes itself
    api_key_revoke(actor=Actor.for_api_key(api.key), api_key=api.key)
    # Then it is revoked
    assert key_row(api)[:2] == (False, True)


@pytest.mark.parametrize("who", ["WRITE user", "another SAFETY user", "READ user", "another unbound key"])
def test_api_key_revoke__someone_else__refused_nothing_changed(
    safety_key: Api, make_api: Callable[..., Api], who: str
) -> None:
    # Given someone who is neither ADMIN nor the key's owner, creator or the key itself
    actors = {
        "WRITE user": lambda: Actor.for_user(UserFactory(username="writer", role="WRITE")),
        "another SAFETY user": lambda: Actor.for_user(UserFactory(username="safety2", role="SAFETY")),
        "READ user": lambda: Actor.for_user(UserFactory(username="reader", role="READ")),
        "another unbound key": lambda: Actor.for_api_key(make_api("WRITE", name="other").key),
    }
    attempt = actors[who]()
    before, entries = key_row(safety_key), AuditEntry.objects.count()
    # When they try to revoke or expire it
    for end in (api_key_revoke, api_key_expire):
        with pytest.raises(PermissionDenied):
            end(actor=attempt, api_key=safety_key.key)
    # Then nothing changed and nothing was audited
    assert key_row(safety_key) == before
    assert AuditEntry.objects.count() == entries


def test_api_key_revoke__already_revoked__conflict_nothing_audited(safety_key: Api) -> None:
    api_key_revoke(actor=SYSTEM, api_key=safety_key.key)
    entries = AuditEntry.objects.count()
    with pytest.raises(Conflict) as caught:
        api_key_revoke(actor=SYSTEM, api_key=safety_key.key)
    assert caught.value.code == "already_revoked"
    with pytest.raises(Conflict) as caught:
        api_key_expire(actor=SYSTEM, api_key=safety_key.key)
    assert caught.value.code == "already_revoked"
    assert AuditEntry.objects.count() == entries


def test_api_key_create__rules_unchanged__admin_still_cannot_bind_to_someone_else() -> None:
    admin = UserFactory(username="root", role="ADMIN")
    safety = UserFactory(username="safety1", role="SAFETY")
    with pytest.raises(PermissionDenied):
        api_key_create(actor=Actor.for_user(admin), name="x", user=safety)
    assert not ApiKey.objects.exists()


# -- the command ---------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["{p}", "ffk_{p}", "ffk_{p}_"])
def test_revoke_api_key_command__prefix__revoked_audited_as_command(safety_key: Api, form: str) -> None:
    # Given the SAFETY engineer's key, named by its prefix as the lists show it
    out = StringIO()
    # When the operator revokes it from the command line
    call_command("revoke_api_key", form.format(p=safety_key.key.key_prefix), stdout=out)
    # Then it is revoked, the output says which key, and the audit names the command
    assert key_row(safety_key)[:2] == (False, True)
    assert out.getvalue().strip() == (f"revoked API key 'safety1-approver' (ffk_{safety_key.key.key_prefix}, "
                                      "bound to safety1).")
    assert key_entries(safety_key)[-1] == ("REVOKE_API_KEY", "system:manage.py revoke_api_key")


def test_revoke_api_key_command__expire__expired(safety_key: Api) -> None:
    call_command("revoke_api_key", safety_key.key.key_prefix, "--expire", stdout=StringIO())
    is_active, revoked, expires_at = key_row(safety_key)
    assert (is_active, revoked, expires_at is not None) == (True, False, True)
    assert key_entries(safety_key)[-1] == ("EXPIRE_API_KEY", "system:manage.py revoke_api_key")


@pytest.mark.parametrize("prefix", ["zzzzzzzz", "ffk_zzzzzzzz", "not a prefix"])
def test_revoke_api_key_command__unknown_prefix__error_nothing_changed(safety_key: Api, prefix: str) -> None:
    before, entries = key_row(safety_key), AuditEntry.objects.count()
    with pytest.raises(CommandError) as caught:
        call_command("revoke_api_key", prefix, stdout=StringIO())
    assert str(caught.value) == f"no API key with prefix {prefix!r}"
    assert (key_row(safety_key), AuditEntry.objects.count()) == (before, entries)


def test_revoke_api_key_command__already_revoked__error(safety_key: Api) -> None:
    call_command("revoke_api_key", safety_key.key.key_prefix, stdout=StringIO())
    entries = AuditEntry.objects.count()
    with pytest.raises(CommandError) as caught:
        call_command("revoke_api_key", safety_key.key.key_prefix, stdout=StringIO())
    assert str(caught.value) == f"API key ffk_{safety_key.key.key_prefix} is revoked already"
    assert AuditEntry.objects.count() == entries


def test_revoke_api_key_command__run_from_argv__exit_status_1(safety_key: Api, capsys: Any) -> None:
    # What a shell sees: CommandError becomes exit status 1 with the message on stderr
    from accounts.management.commands.revoke_api_key import Command

    with pytest.raises(SystemExit) as caught:
        Command().run_from_argv(["manage.py", "revoke_api_key", "zzzzzzzz"])
    assert caught.value.code == 1
    assert "no API key with prefix 'zzzzzzzz'" in capsys.readouterr().err


# -- the admin -----------------------------------------------------------------------------------


def test_admin_revoke_action__admin_user_safety_engineers_key__revoked(client: Any, safety_key: Api) -> None:
    admin = UserFactory(username="root", role="ADMIN")
    client.force_login(admin)
    response = client.post("/admin/accounts/apikey/", {"action": "revoke_keys",
                                                       "_selected_action": [safety_key.key.pk]}, follow=True)
    assert [str(m) for m in response.context["messages"]] == ["Revoked 1 API key(s)."]
    assert key_row(safety_key)[:2] == (False, True)
    assert key_entries(safety_key)[-1] == ("REVOKE_API_KEY", "root")


def test_admin_changelist__safety_user__sees_and_revokes_only_own_keys(
    client: Any, safety_key: Api, make_api: Callable[..., Api]
) -> None:
    # Given the SAFETY engineer in the admin, their key, and someone else's
    other = make_api("ADMIN", name="ops-key")
    client.force_login(safety_key.key.user)
    # When they open the API key list
    listing = client.get("/admin/accounts/apikey/")
    # Then they see their key only, with the revoke and expire actions
    assert listing.status_code == 200
    assert [k.pk for k in listing.context["cl"].result_list] == [safety_key.key.pk]
    assert {"revoke_keys", "expire_keys"} <= {name for name, _ in listing.context["action_form"]
                                               .fields["action"].choices}
    # When they select both keys and revoke
    client.post("/admin/accounts/apikey/", {"action": "revoke_keys",
                                            "_selected_action": [safety_key.key.pk, other.key.pk]})
    # Then theirs is revoked, the other untouched and unaudited
    assert key_row(safety_key)[:2] == (False, True)
    assert key_row(other)[:2] == (True, False)
    assert key_entries(other) == [("CREATE_API_KEY", "system:tests")]


def test_admin_revoke_action__write_user__other_key_untouched(client: Any, safety_key: Api) -> None:
    client.force_login(UserFactory(username="writer", role="WRITE"))
    before = key_row(safety_key)
    client.post("/admin/accounts/apikey/", {"action": "revoke_keys", "_selected_action": [safety_key.key.pk]})
    assert key_row(safety_key) == before
    assert key_entries(safety_key) == [("CREATE_API_KEY", "safety1")]


def test_admin_key_page__other_users_key__not_visible(client: Any, safety_key: Api) -> None:
    client.force_login(UserFactory(username="safety2", role="SAFETY"))
    response = client.get(f"/admin/accounts/apikey/{safety_key.key.pk}/change/")
    assert response.status_code == 302  # Django's "does not exist" redirect to the admin index
    assert response["Location"] == "/admin/"


# -- the API -------------------------------------------------------------------------------------


def test_api_revoke__admin_key_safety_engineers_key__200_and_key_refused(admin_api: Api, safety_key: Api,
                                                                          on_commit: Any) -> None:
    # Given the SAFETY engineer's key works
    assert safety_key.get("/api/v1/flags/").status_code == 200
    prefix = safety_key.key.key_prefix
    # When an ADMIN key revokes it
    with on_commit():
        response = admin_api.post(f"/api/v1/api-keys/{prefix}/revoke/")
    # Then the answer shows it revoked, and the key is refused from the next request on
    assert response.status_code == 200
    body = response.json()
    assert (body["prefix"], body["state"], body["user"], body["links"]["self"]) == (
        prefix, "revoked", "safety1", f"/api/v1/api-keys/{prefix}/")
    assert "key_hash" not in body
    refused = safety_key.get("/api/v1/flags/")
    assert (refused.status_code, error(refused)["code"]) == (401, "api_key_revoked")
    assert key_entries(safety_key)[-1] == ("REVOKE_API_KEY", "api-key:admin-key")


def test_api_revoke__admin_session__200(client: Any, safety_key: Api) -> None:
    client.force_login(UserFactory(username="root", role="ADMIN"))
    response = client.post(f"/api/v1/api-keys/ffk_{safety_key.key.key_prefix}/revoke/",
                           content_type="application/json")
    assert (response.status_code, response.json()["state"]) == (200, "revoked")
    assert key_entries(safety_key)[-1] == ("REVOKE_API_KEY", "root")


def test_api_revoke__owner_session_and_key__200(client: Any, safety_key: Api, make_api: Callable[..., Api]) -> None:
    # Given the engineer's second key, bound to them too
    second = make_api("READ", user=safety_key.key.user, name="safety1-laptop")
    # When they expire one key from their session and revoke the other with itself
    client.force_login(safety_key.key.user)
    expired = client.post(f"/api/v1/api-keys/{second.key.key_prefix}/expire/", content_type="application/json")
    revoked = safety_key.post(f"/api/v1/api-keys/{safety_key.key.key_prefix}/revoke/")
    # Then both succeed
    assert (expired.status_code, expired.json()["state"]) == (200, "expired")
    assert (revoked.status_code, revoked.json()["state"]) == (200, "revoked")


def test_api_revoke__write_key_other_key__403_nothing_changed(write_api: Api, safety_key: Api) -> None:
    before = key_row(safety_key)
    for verb in ("revoke", "expire"):
        response = write_api.post(f"/api/v1/api-keys/{safety_key.key.key_prefix}/{verb}/")
        assert (response.status_code, error(response)["code"]) == (403, "permission_denied")
    assert key_row(safety_key) == before
    assert key_entries(safety_key) == [("CREATE_API_KEY", "safety1")]


def test_api_revoke__already_revoked__409(admin_api: Api, safety_key: Api) -> None:
    api_key_revoke(actor=SYSTEM, api_key=safety_key.key)
    response = admin_api.post(f"/api/v1/api-keys/{safety_key.key.key_prefix}/revoke/")
    assert (response.status_code, error(response)["code"]) == (409, "already_revoked")
    response = admin_api.post(f"/api/v1/api-keys/{safety_key.key.key_prefix}/expire/")
    assert (response.status_code, error(response)["code"]) == (409, "already_revoked")


def test_api_revoke__unknown_prefix__404(admin_api: Api) -> None:
    response = admin_api.post("/api/v1/api-keys/zzzzzzzz/revoke/")
    assert (response.status_code, error(response)["code"]) == (404, "not_found")


def test_api_key_list__admin__every_key_never_the_hash(admin_api: Api, safety_key: Api) -> None:
    response = admin_api.get("/api/v1/api-keys/")
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    assert [k["name"] for k in body["results"]] == ["safety1-approver", "admin-key"]
    assert set(body["results"][0]) == {"prefix", "name", "role", "user", "user_is_active", "state",
                                       "rate_limit_per_min", "last_used_at", "expires_at", "created_by",
                                       "created_at", "revoked_at", "links"}
    assert safety_key.key.key_hash not in response.content.decode()


def test_api_key_list__state_filter__only_matching(admin_api: Api, safety_key: Api) -> None:
    api_key_revoke(actor=SYSTEM, api_key=safety_key.key)
    revoked = admin_api.get("/api/v1/api-keys/", state="revoked").json()
    active = admin_api.get("/api/v1/api-keys/", state="active").json()
    assert [k["name"] for k in revoked["results"]] == ["safety1-approver"]
    assert [k["name"] for k in active["results"]] == ["admin-key"]
    bad = admin_api.get("/api/v1/api-keys/", state="gone")
    assert (bad.status_code, error(bad)["fields"]) == (400, {"state": ["expected one of active, inactive, "
                                                                         "expired, revoked"]})


def test_api_key_list__owner__only_own_keys(admin_api: Api, safety_key: Api) -> None:
    body = safety_key.get("/api/v1/api-keys/").json()
    assert [k["prefix"] for k in body["results"]] == [safety_key.key.key_prefix]


def test_api_key_detail__own_and_others(admin_api: Api, safety_key: Api) -> None:
    own = safety_key.get(f"/api/v1/api-keys/{safety_key.key.key_prefix}/")
    assert (own.status_code, own.json()["user"], own.json()["user_is_active"]) == (200, "safety1", True)
    other = safety_key.get(f"/api/v1/api-keys/{admin_api.key.key_prefix}/")
    assert (other.status_code, error(other)["code"]) == (403, "permission_denied")
    missing = admin_api.get("/api/v1/api-keys/zzzzzzzz/")
    assert (missing.status_code, error(missing)["code"]) == (404, "not_found")


# -- the caches ----------------------------------------------------------------------------------


def test_lookup__load_racing_the_revocation__revoked_state_kept(safety_key: Api, on_commit: Any) -> None:
    # Given a lookup in another process that read the row just before the revocation committed
    stale = keys.info_for(ApiKey.objects.select_related("user").get(pk=safety_key.key.pk))
    assert stale.refusal() is None
    # When the revocation commits, and that lookup then caches what it read
    with on_commit():
        api_key_revoke(actor=SYSTEM, api_key=safety_key.key)
    from django.core.cache import cache

    cache.add(keys._cache_key(safety_key.key.key_hash), stale, timeout=60)  # what keys.load does
    keys.forget_local()
    # Then the shared cache still says revoked
    found = keys.lookup(safety_key.raw)
    assert found is not None
    assert found.refusal() == ("api_key_revoked", f"API key ffk_{safety_key.key.key_prefix} was revoked")


VIN = "KMHXX00XXXX000001"


def test_request__bound_user_deactivated__401_api_key_inactive_everywhere(safety_key: Api, on_commit: Any) -> None:
    # Given the SAFETY engineer's key works on a plain and a hot path (so both caches hold it)
    assert safety_key.get("/api/v1/flags/").status_code == 200
    assert safety_key.post("/api/v1/evaluate/", {"flag_key": "x", "vin": VIN}).status_code == 200
    # When an ADMIN deactivates the engineer
    with on_commit():
        user_set_active(actor=Actor.for_user(UserFactory(username="root", role="ADMIN")),
                        user=safety_key.key.user, active=False)
    # Then the key is refused at once, with its own code, and the deactivation is audited
    for response in (safety_key.get("/api/v1/flags/"),
                     safety_key.post("/api/v1/evaluate/", {"flag_key": "x", "vin": VIN})):
        assert (response.status_code, error(response)["code"]) == (401, "api_key_inactive")
    entry = AuditEntry.objects.get(action="DEACTIVATE_USER")
    assert (entry.actor, entry.object_type, entry.before["is_active"], entry.after["is_active"]) == (
        "root", "user", True, False)


def test_request__bound_user_deactivated_other_process__refused_after_local_cache(
    safety_key: Api, on_commit: Any, settings: Any
) -> None:
    # Given another process: it holds the key in its 2 s local cache (simulated by the clock)
    assert safety_key.get("/api/v1/flags/").status_code == 200
    with on_commit():
        user_set_active(actor=SYSTEM, user=safety_key.key.user, active=False)
    # the committing process dropped its own entry; put back what the other process still holds
    info = keys.info_for(ApiKey.objects.get(pk=safety_key.key.pk))
    active_then = keys.KeyInfo(**{**info.__dict__, "is_active": True})
    keys._local[safety_key.key.key_hash] = (0.0, active_then)  # its 2 s have passed
    # When it serves the key again
    response = safety_key.get("/api/v1/flags/")
    # Then it read the shared entry the deactivation rewrote
    assert (response.status_code, error(response)["code"]) == (401, "api_key_inactive")


# -- decisions -----------------------------------------------------------------------------------


@pytest.fixture
def pending_request() -> ChangeRequest:
    flag = FlagFactory(key="brake.blend", safety_level="ASIL_D", enabled=False)
    writer = Actor.for_user(UserFactory(username="chassis-dev", role="WRITE"))
    request = flag_services.flag_set_enabled(actor=writer, flag=flag, enabled=True, rationale="HARA-1").change_request
    assert request is not None
    return request


def actor_from_key(api: Api) -> Actor:
    """What the API builds for a request made with ``api``: from the cached KeyInfo."""
    info = keys.lookup(api.raw or "")
    assert info is not None and info.refusal() is None
    return Actor.for_api_key(info.as_model())


DECISIONS: dict[str, Callable[[Actor, ChangeRequest], Any]] = {
    "approve": lambda who, cr: flag_services.change_request_approve(actor=who, change_request=cr.pk),
    "reject": lambda who, cr: flag_services.change_request_reject(actor=who, change_request=cr.pk, reason="no"),
}


@pytest.mark.parametrize("decision", list(DECISIONS))
@pytest.mark.parametrize("how", ["revoked", "expired", "user deactivated"])
def test_change_request_decision__key_ended_after_actor_built__refused_nothing_changed(
    safety_key: Api, pending_request: ChangeRequest, decision: str, how: str
) -> None:
    # Given an Actor built from the SAFETY engineer's key while it was valid
    approver = actor_from_key(safety_key)
    # When the key is ended (its cached KeyInfo still says valid) and the actor then decides
    ends = {
        "revoked": lambda: api_key_revoke(actor=SYSTEM, api_key=safety_key.key),
        "expired": lambda: api_key_expire(actor=SYSTEM, api_key=safety_key.key),
        "user deactivated": lambda: user_set_active(actor=SYSTEM, user=safety_key.key.user, active=False),
    }
    ends[how]()
    entries = AuditEntry.objects.count()
    with pytest.raises(PermissionDenied) as caught:
        DECISIONS[decision](approver, pending_request)
    # Then it is refused: the request is pending, the flag unchanged, nothing audited
    expected = {"revoked": "is revoked", "expired": "is expired", "user deactivated": "safety1 is inactive"}[how]
    assert expected in caught.value.message
    assert ChangeRequest.objects.get(pk=pending_request.pk).status == "pending"
    assert Flag.objects.get(key="brake.blend").enabled is False
    assert AuditEntry.objects.count() == entries
    assert not AuditEntry.objects.filter(action__in=["APPROVE_CHANGE", "REJECT_CHANGE", "ENABLE_FLAG"]).exists()


def test_change_request_approve__valid_key__applied(safety_key: Api, pending_request: ChangeRequest) -> None:
    # The re-check refuses only ended keys: a valid one still approves
    flag_services.change_request_approve(actor=actor_from_key(safety_key), change_request=pending_request.pk)
    assert ChangeRequest.objects.get(pk=pending_request.pk).status == "approved"
    assert Flag.objects.get(key="brake.blend").enabled is True


def test_change_request_withdraw__requesting_key_revoked__refused(make_api: Callable[..., Api]) -> None:
    # Given a request made through a WRITE key, which is then revoked
    FlagFactory(key="brake.blend", safety_level="ASIL_D", enabled=False)
    api = make_api("WRITE", name="ci")
    requester = actor_from_key(api)
    request = flag_services.flag_set_enabled(actor=requester, flag="brake.blend", enabled=True,
                                             rationale="r").change_request
    assert request is not None
    api_key_revoke(actor=SYSTEM, api_key=api.key)
    entries = AuditEntry.objects.count()
    # When the revoked key withdraws it, then refused and nothing changed
    with pytest.raises(PermissionDenied):
        flag_services.change_request_withdraw(actor=requester, change_request=request.pk)
    assert ChangeRequest.objects.get(pk=request.pk).status == "pending"
    assert AuditEntry.objects.count() == entries


def test_selectors_api_key_get__unknown__not_found() -> None:
    from accounts.selectors import api_key_get

    with pytest.raises(NotFound):
        api_key_get(prefix="ffk_abcdefgh")
