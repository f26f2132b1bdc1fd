"""Revoking and expiring a key when the cache is down after commit: the key is ended and the
call succeeds; the cache entry expires on its own (API_KEY_CACHE_SECONDS)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from accounts import keys
from accounts.models import ApiKey
from accounts.services import api_key_create, api_key_expire, api_key_revoke
from core.actors import Actor

SYSTEM = Actor.for_system("tests")


@pytest.mark.parametrize(("end", "state"), [(api_key_revoke, "revoked"), (api_key_expire, "expired")])
def test_api_key_end__cache_down_after_commit__key_ended_and_no_error(
    committed_db: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    end: Callable[..., ApiKey], state: str
) -> None:
    # Given a key, and a cache that fails when the key's entry is dropped after commit
    key, _ = api_key_create(actor=SYSTEM, name="script", role="READ")

    def down(key_hash: str) -> Any:
        raise ConnectionError("cache down")

    monkeypatch.setattr(keys, "forget", down)
    monkeypatch.setattr(keys, "refresh", down)  # revocation rewrites the entry rather than dropping it
    # When the key is ended (a real commit: Django runs the on-commit hooks)
    end(actor=SYSTEM, api_key=key)
    # Then it is ended, the call reported no error, and the failure is logged
    assert ApiKey.objects.get(pk=key.pk).state == state
    assert [type(r.exc_info[1]) for r in caplog.records if r.exc_info] == [ConnectionError]
