"""API key checks (accounts.keys): the expiry instant, the cached lookup, the request's
stand-in key, and last_used_at kept to the minute. Written against surviving mutants."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.core.cache import cache
from django.utils import timezone

from accounts import keys
from accounts.models import ApiKey
from accounts.services import api_key_create, api_key_revoke
from audit.models import AuditEntry
from core.actors import Actor
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

SYSTEM = Actor.for_system("tests")


@pytest.fixture(autouse=True)
def _fresh_key_state() -> Any:
    keys.forget_local()
    yield
    keys.forget_local()


def _key(**fields: Any) -> tuple[ApiKey, str]:
    return api_key_create(actor=SYSTEM, name=fields.pop("name", "script"), role=fields.pop("role", "READ"), **fields)


class Clock:
    """Stands in for the ``time`` module in accounts.keys: monotonic() is what the test says."""

    def __init__(self, now: float) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now


class RecordingCache:
    """The real cache, with every ``add`` and ``set`` recorded (key, timeout)."""

    def __init__(self) -> None:
        self.adds: list[tuple[str, Any]] = []
        self.sets: list[tuple[str, Any]] = []

    def set(self, key: str, value: Any, **kwargs: Any) -> None:
        self.sets.append((key, kwargs.get("timeout", "default")))
        cache.set(key, value, **kwargs)

    def add(self, key: str, value: Any, **kwargs: Any) -> bool:
        self.adds.append((key, kwargs.get("timeout", "default")))
        return bool(cache.add(key, value, **kwargs))

    def __getattr__(self, name: str) -> Any:
        return getattr(cache, name)


def test_key_info_refusal__at_the_expiry_instant__expired() -> None:
    # Given a key that expires at a given instant
    expires_at = timezone.now() + timedelta(days=30)
    key, _ = _key(expires_at=expires_at)
    info = keys.info_for(key)
    # When it is checked just before and exactly at that instant
    before = info.refusal(expires_at - timedelta(microseconds=1))
    at = info.refusal(expires_at)
    # Then it is valid until then and expired from that instant on
    assert before is None
    assert at == ("api_key_expired", f"API key ffk_{key.key_prefix} expired at {expires_at:%Y-%m-%d %H:%M} UTC")


def test_key_info_as_model__loaded_key__stand_in_carries_the_keys_fields() -> None:
    # Given a key bound to a user, with a limit and an expiry
    user = UserFactory(username="safety-1", role="SAFETY")
    key, raw = api_key_create(actor=Actor.for_user(user), name="approver", role="READ", user=user,
                              rate_limit_per_min=120, expires_at=timezone.now() + timedelta(days=3))
    # When authentication builds the request's stand-in from the cached info
    stand_in = keys.lookup(raw).as_model()  # type: ignore[union-attr]
    # Then it is that key, field for field
    fields = ("pk", "name", "key_prefix", "role", "user_id", "rate_limit_per_min", "expires_at", "created_by_id")
    stored = ApiKey.objects.get(pk=key.pk)
    assert [getattr(stand_in, f) for f in fields] == [getattr(stored, f) for f in fields]


def test_lookup__key_seen_before__answered_without_the_database(django_assert_num_queries: Any) -> None:
    # Given a key looked up once (from the database)
    _, raw = _key()
    first = keys.lookup(raw)
    # When it is looked up again
    with django_assert_num_queries(0):
        again = keys.lookup(raw)
    # Then the caches answer, with the same info
    assert again == first


def test_touch_due__again_within_the_minute__false_without_asking_the_shared_cache() -> None:
    # Given a key whose use this process has just recorded
    key, _ = _key()
    info = keys.info_for(key)
    assert keys.touch_due(info) is True
    # When it is used again with the shared latch gone (another process's cache, an eviction)
    cache.clear()
    # Then this process still remembers: no write due
    assert keys.touch_due(info) is False


def test_touch_due__two_keys__each_due_on_first_use() -> None:
    # Given two keys
    one, two = keys.info_for(_key(name="one")[0]), keys.info_for(_key(name="two")[0])
    # When both are used for the first time, and the first again
    answers = [keys.touch_due(one), keys.touch_due(two), keys.touch_due(one)]
    # Then each key has its own latch
    assert answers == [True, True, False]


def test_touch_due__exactly_a_minute_after__due_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a key used at t = 1000 s (monotonic)
    clock = Clock(1000.0)
    monkeypatch.setattr(keys, "time", clock)
    info = keys.info_for(_key()[0])
    assert keys.touch_due(info) is True
    cache.clear()  # the shared latch has expired too
    # When it is used just under, then exactly, a minute later
    clock.now = 1059.999
    under = keys.touch_due(info)
    clock.now = 1060.0
    at = keys.touch_due(info)
    # Then the write is due from the minute on
    assert (under, at) == (False, True)


def test_touch_due__first_use__takes_the_keys_latch_for_a_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the shared cache, watched
    recording = RecordingCache()
    monkeypatch.setattr(keys, "cache", recording)
    info = keys.info_for(_key()[0])
    # When the key is used for the first time
    due = keys.touch_due(info)
    # Then this process took the key's own latch, for TOUCH_INTERVAL_SECONDS (60 s)
    assert due is True
    assert recording.adds == [(f"ff:apikey:touch:{info.id}", 60)]


@pytest.mark.parametrize(("seconds_ago", "written"), [(30, False), (61, True)])
def test_touch_write__last_use_recorded__written_only_a_minute_later(seconds_ago: int, written: bool) -> None:
    # Given a key whose last use was recorded some seconds ago
    key, _ = _key()
    recorded = timezone.now() - timedelta(seconds=seconds_ago)
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=recorded)
    # When a process writes its use
    keys.touch_write(key.pk)
    # Then the row changes only when the recorded use is over a minute old
    now = ApiKey.objects.get(pk=key.pk).last_used_at
    assert (now != recorded) is written
    assert now is not None and now >= recorded


def test_info_for__key_of_superuser__admin_role_added_to_groups() -> None:
    # Given a superuser who is also in the SAFETY group, and their own key
    user = UserFactory(username="root", role="SAFETY", is_superuser=True)
    key, _ = api_key_create(actor=Actor.for_user(user), name="root-script", role="READ", user=user)
    # When authentication reads the key
    info = keys.info_for(key)
    # Then it acts with the user's roles, ADMIN included (as Actor.for_user gives them)
    assert info.roles == frozenset({"SAFETY", "ADMIN"}) == Actor.for_user(user).roles


def test_load__key_bound_to_user__two_queries(django_assert_num_queries: Any) -> None:
    # Given a key bound to a user
    user = UserFactory(username="safety-1", role="SAFETY")
    _, raw = api_key_create(actor=Actor.for_user(user), name="approver", user=user)
    # When a cache miss loads it, Then the key and its user come in one query, the groups in another
    with django_assert_num_queries(2):
        info = keys.load(raw)
    assert info is not None and info.roles == frozenset({"SAFETY"})


def test_lookup__unknown_key__remembered_as_missing(django_assert_num_queries: Any) -> None:
    # Given a well-formed key that does not exist, looked up once
    raw = "ffk_abcdefgh_" + "x" * 43
    assert keys.lookup(raw) is None
    keys.forget_local()
    # When it is looked up again (a flood of guesses)
    with django_assert_num_queries(0):
        again = keys.lookup(raw)
    # Then the shared cache answers that it does not exist
    assert again is None


@pytest.mark.parametrize(("cache_seconds", "miss_seconds"), [(60, 15), (3, 1)])
def test_load__cache_timeouts__key_for_the_setting_a_miss_for_a_quarter(
    monkeypatch: pytest.MonkeyPatch, settings: Any, cache_seconds: int, miss_seconds: int
) -> None:
    # Given API_KEY_CACHE_SECONDS: how long another process may act on a stale answer
    settings.API_KEY_CACHE_SECONDS = cache_seconds
    recording = RecordingCache()
    monkeypatch.setattr(keys, "cache", recording)
    _, raw = _key()
    missing = "ffk_abcdefgh_" + "x" * 43
    # When a key and an unknown key are loaded from the database
    keys.load(raw)
    keys.load(missing)
    # Then the key is cached for the setting, the miss for a quarter of it (at least 1 s); both
    # with add, so that a revocation's refresh written meanwhile is never replaced by this read
    assert recording.adds == [(f"ff:apikey:{keys.hash_key(raw)}", cache_seconds),
                              (f"ff:apikey:{keys.hash_key(missing)}", miss_seconds)]
    assert recording.sets == []


def test_cached_lookup__shared_entry_gone__this_process_answers_for_two_seconds(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    # Given a key this process has seen through the shared cache at t = 1000 s
    settings.API_KEY_LOCAL_CACHE_SECONDS = 2
    clock = Clock(1000.0)
    monkeypatch.setattr(keys, "time", clock)
    _, raw = _key()
    info = keys.lookup(raw)  # from the database, into the shared cache
    assert keys.cached_lookup(raw) == info  # from the shared cache, into this process's memory
    # When the shared entry goes (evicted, or another process's revocation) and time passes
    cache.clear()
    clock.now = 1001.999
    within = keys.cached_lookup(raw)
    clock.now = 1002.0
    after = keys.cached_lookup(raw)
    # Then this process answers from its memory for API_KEY_LOCAL_CACHE_SECONDS, then asks again
    assert (within, after) == (info, None)


def test_new_key__made__prefix_and_43_character_secret() -> None:
    # When a key is made
    raw, prefix = keys.new_key()
    # Then it reads ffk_<8-character prefix>_<43 URL-safe characters> (32 random bytes)
    assert re.fullmatch(rf"ffk_{prefix}_[A-Za-z0-9_-]{{43}}", raw), raw
    assert re.fullmatch(r"[a-z0-9]{8}", prefix), prefix


def test_api_key_audit__create_then_revoke__entries_describe_the_key_without_secret() -> None:
    # Given a SAFETY engineer's own key with a limit and an expiry
    user = UserFactory(username="safety-1", role="SAFETY")
    expires_at = timezone.now() + timedelta(days=3)
    key, raw = api_key_create(actor=Actor.for_user(user), name="approver", role="READ", user=user,
                              rate_limit_per_min=120, expires_at=expires_at)
    # When it is revoked
    revoked = api_key_revoke(actor=Actor.for_user(user), api_key=key)
    # Then the audit describes the key field by field, before and after, never with its secret
    described = {"name": "approver", "prefix": key.key_prefix, "role": "READ", "user": "safety-1",
                 "rate_limit_per_min": 120, "is_active": True, "expires_at": expires_at.isoformat(),
                 "revoked_at": None}
    created = AuditEntry.objects.get(action="CREATE_API_KEY")
    revoke = AuditEntry.objects.get(action="REVOKE_API_KEY")
    assert created.after == described
    assert (revoke.before, revoke.after) == (
        described, {**described, "is_active": False, "revoked_at": revoked.revoked_at.isoformat()})
    assert raw not in str([created.after, revoke.before, revoke.after])


@pytest.mark.django_db
def test_key_principal__request_user_of_a_key__named_after_the_key_with_the_bound_users_id() -> None:
    from accounts.authentication import KeyPrincipal
    from tests.factories import UserFactory

    user = UserFactory(username="tier1-bot", role="READ")
    _, raw = api_key_create(actor=Actor.for_user(user), name="supplier-x", role="READ", user=user)
    info = keys.lookup(raw)
    assert info is not None
    principal = KeyPrincipal(info)
    assert (str(principal), principal.pk, principal.id, principal.info) == ("api-key:supplier-x", user.pk, user.pk, info)
    assert (principal.is_authenticated, principal.is_staff, principal.is_superuser) == (True, False, False)
